"""`bench quickstart`: the product in minutes: a short M2D pretraining, then M2D, its step-0 twin and fbank
on the mini clip tasks -> a leaderboard."""

from __future__ import annotations

import sys


def invoked_command(name: str) -> str:
    """The command line as typed when `bench NAME` was run from a shell, else a description of it."""
    import shlex

    args = sys.argv[1:]
    return "bench " + " ".join(shlex.quote(a) for a in args) if name in args[:1] else f"bench {name} (called from Python)"


def check_outputs(out, runs=None, cache_root=None) -> None:
    """Every folder the study writes must be writable before the first stage runs (one line, exit 2)."""
    from bench.cache import cache_root as default_cache
    from bench.errors import UserError
    from upstreams.fileio import writable_problem
    from upstreams.runs import runs_root

    for flag, given, path in (("--out", out, out), ("--runs", runs, runs or runs_root()),
                              ("--cache-root", cache_root, default_cache(cache_root))):
        problem = writable_problem(path)
        if problem:
            raise UserError(f"{flag} {given or path}: {problem}; choose a writable folder")


def add_executor_args(p) -> None:
    """--executor local|ray|slurm and each engine's options (checked before any stage runs)."""
    p.add_argument("--executor", default="local", metavar="NAME",
                   help="where stages compute: local (default), ray (an existing cluster) or slurm (via submitit); "
                        "a study started with one resumes with another")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="stages in flight at most: local processes with cores/N threads each (default 1; on 2 cores "
                        "--jobs 2 ran the quickstart plan 1.4x faster with identical scores: benchmarks/executors.py); "
                        "ray/slurm: default the cluster's CPUs / 256 jobs")
    p.add_argument("--ray-address", default="auto", metavar="auto|HOST:PORT",
                   help="the Ray cluster to use (default auto: the one `ray start` started on this node)")
    p.add_argument("--pretrain-gpus", type=int, default=1, metavar="N",
                   help="ray: GPUs per pretraining stage (default 1)")
    p.add_argument("--slurm-partition", default=None, metavar="NAME", help="slurm: partition to submit to")
    p.add_argument("--slurm-gpus-per-node", type=int, default=0, metavar="N",
                   help="slurm: GPUs of one node (default 0: CPU jobs); pretraining takes all N as N torchrun ranks")
    p.add_argument("--slurm-time", type=int, default=240, metavar="MIN", help="slurm: time limit per job (default 240)")


def executor_options(args):
    from bench.study.executors import ExecutorOptions

    return ExecutorOptions(name=args.executor, jobs=args.jobs, ray_address=args.ray_address,
                           slurm_partition=args.slurm_partition, slurm_gpus_per_node=args.slurm_gpus_per_node,
                           slurm_time_min=args.slurm_time, pretrain_gpus=args.pretrain_gpus)


def add_common(p) -> None:
    p.add_argument("--data-root", default=None, help="mini-benchmark root (default $BENCH_DATA or the user cache)")
    p.add_argument("--cache-root", default=None, help="embedding cache (default $BENCH_CACHE or the user cache)")
    p.add_argument("--upstreams", nargs="+", default=None, metavar="NAME", help="only these upstreams")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="only these tasks")
    p.add_argument("--protocols", nargs="+", default=None, metavar="PROTOCOL", help="only these protocols")
    p.add_argument("--dry-run", action="store_true", help="list the stages and whether they are done, run nothing")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    add_executor_args(p)
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="repeat pretraining and evaluation with seeds 0..N-1 (default 1); tables show the mean, the "
                        "std over seeds and 95%% intervals, and claims use paired tests over seeds (and folds)")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "quickstart", help="a short M2D pretraining, then m2d, its step-0 twin and fbank on the mini clip tasks",
        description="Build the mini ESC-50, Speech Commands, ICBHI and the pretraining corpus, pretrain M2D for about "
        "5 minutes (`bench pretrain m2d --config quick`), evaluate it, its step-0 twin (random -o like=CKPT) and fbank "
        "with the linear and knn protocols, and write the leaderboard, plots, the claims report and index.html under "
        "--out. `bench reproduce` is the full study.")
    p.add_argument("--out", default="results/quickstart", help="results directory (default results/quickstart)")
    add_common(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from bench.study.plans import QUICK_UPSTREAMS
    from bench.study.reproduce import reproduce

    if not args.dry_run:
        check_outputs(args.out, cache_root=args.cache_root)
    ups = tuple(args.upstreams) if args.upstreams else QUICK_UPSTREAMS
    written = reproduce(
        profile="mini", out=args.out, data_root=args.data_root, cache_root=args.cache_root, upstreams=ups,
        tasks=tuple(args.tasks) if args.tasks else None, protocols=tuple(args.protocols) if args.protocols else None,
        dry_run=args.dry_run, progress=args.progress, quick=True, executor=executor_options(args), seeds=args.seeds, command=invoked_command('quickstart'), log=lambda m: print(m, file=sys.stderr, flush=True))
    for name, path in written.items():
        print(f"wrote {path}")
    return 0
