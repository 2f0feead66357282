"""`bench quickstart`: a first real leaderboard on the mini-benchmark in minutes (no pretraining)."""

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


def add_common(p) -> None:
    p.add_argument("--data-root", default=None, help="mini-benchmark root (default $BENCH_DATA or the user cache)")
    p.add_argument("--cache-root", default=None, help="embedding cache (default $BENCH_CACHE or the user cache)")
    p.add_argument("--upstreams", nargs="+", default=None, metavar="NAME", help="only these upstreams")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="only these tasks")
    p.add_argument("--protocols", nargs="+", default=None, metavar="PROTOCOL", help="only these protocols")
    p.add_argument("--dry-run", action="store_true", help="list the stages and whether they are done, run nothing")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run up to N independent stages at once, each in its own process with cores/N threads "
                        "(default 1; on 2 cores --jobs 2 ran the quickstart plan 1.4x faster with identical scores: "
                        "benchmarks/reproduce_jobs.py)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="repeat pretraining and evaluation with seeds 0..N-1 (default 1); tables show the mean, the "
                        "std over seeds and 95%% intervals, and claims use paired tests over seeds (and folds)")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "quickstart", help="baselines (and any finished pretraining runs) on the mini clip tasks -> a leaderboard",
        description="Build the mini ESC-50, Speech Commands and ICBHI, evaluate fbank and random (plus m2d, m2dx and "
        "score when a finished pretraining run of theirs exists) with the linear and weighted protocols, and write "
        "the leaderboard, plots and a report under --out. `bench reproduce` is the full study.")
    p.add_argument("--out", default="results/quickstart", help="results directory (default results/quickstart)")
    add_common(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from bench.reproduce import PRETRAINED, UPSTREAMS, reproduce
    from upstreams.runs import run_checkpoints

    if not args.dry_run:
        check_outputs(args.out, cache_root=args.cache_root)
    ups = tuple(args.upstreams) if args.upstreams else tuple(
        u for u in UPSTREAMS if u not in PRETRAINED or run_checkpoints(u))
    written = reproduce(
        profile="mini", out=args.out, data_root=args.data_root, cache_root=args.cache_root, upstreams=ups,
        tasks=tuple(args.tasks) if args.tasks else None, protocols=tuple(args.protocols) if args.protocols else None,
        dry_run=args.dry_run, progress=args.progress, quick=True, jobs=args.jobs, seeds=args.seeds, command=invoked_command('quickstart'), log=lambda m: print(m, file=sys.stderr, flush=True))
    for name, path in written.items():
        print(f"wrote {path}")
    return 0
