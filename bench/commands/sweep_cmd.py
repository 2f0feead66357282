"""`bench sweep PLAN.yaml`: your upstreams x tasks x protocols x seeds as a resumable study, on any executor."""

from __future__ import annotations

import sys

from .quickstart_cmd import add_executor_args, check_outputs, executor_options, invoked_command


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep", help="evaluate a plan of upstreams x tasks x protocols x seeds (YAML or flags) on any executor",
        description="Expand PLAN (a YAML file, see docs/reproduce.md; or `reproduce` / `quickstart`, the built-in "
        "plans) into stages, skip those already done, run the rest with --executor local|ray|slurm, then write the "
        "leaderboard, plots and report under --out. Flags extend or replace the plan's fields.")
    p.add_argument("plan", nargs="?", default=None, metavar="PLAN",
                   help="a plan file (YAML), or reproduce|quickstart; omit it to give the plan as flags")
    p.add_argument("--out", default=None, help="results directory (default results/sweep-<plan name>)")
    p.add_argument("--runs", default=None, help="pretraining run root (built-in reproduce plan only)")
    p.add_argument("--profile", default=None, choices=["tiny", "mini"],
                   help="built-in data profile (default: the plan's, else mini)")
    p.add_argument("--upstreams", nargs="+", default=None, metavar="NAME", help="replace the plan's upstreams")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="replace the plan's tasks")
    p.add_argument("--protocols", nargs="+", default=None, metavar="PROTOCOL", help="replace the plan's protocols")
    p.add_argument("--seeds", type=int, default=None, metavar="N", help="seeds 0..N-1 (replaces the plan's)")
    p.add_argument("--lr", nargs="+", type=float, default=None, dest="lrs", metavar="LR", help="lr grid of every head")
    p.add_argument("--data-root", default=None, help="mini-benchmark root (default $BENCH_DATA or the user cache)")
    p.add_argument("--cache-root", default=None, help="embedding cache (default $BENCH_CACHE or the user cache)")
    p.add_argument("--force", nargs="+", default=[], metavar="STAGE", help="redo these stages (or 'all')")
    p.add_argument("--dry-run", action="store_true",
                   help="print the expanded stages, the resources each asks for and whether it is done; run nothing")
    p.add_argument("--render-only", action="store_true", help="run no stage: render what is finished")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    add_executor_args(p)
    p.set_defaults(func=_run)


def _plan_from_args(args) -> tuple[dict, str]:
    """The plan file (or an empty plan) with the flags applied, and the name the default --out uses."""
    from pathlib import Path

    from bench.study.sweep_plan import load_plan

    data = load_plan(args.plan) if args.plan else {}
    name = Path(args.plan).stem if args.plan else "flags"
    if args.upstreams:
        data["upstreams"] = list(args.upstreams)
    if args.tasks:
        data["tasks"] = list(args.tasks)
    if args.protocols:
        data["protocols"] = list(args.protocols)
    if args.seeds is not None:
        data["seeds"] = args.seeds
    if args.lrs:
        data["lrs"] = list(args.lrs)
    return data, name


def _run(args) -> int:
    from pathlib import Path

    from bench.study.reproduce import BUILTIN_PLANS, reproduce, sweep

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    command = invoked_command("sweep")
    if args.plan in BUILTIN_PLANS and not Path(args.plan).exists():  # the built-in study is one plan among others
        profile = "mini" if args.plan == "quickstart" else (args.profile or "mini")
        out = args.out or Path("results") / (profile if args.plan == "reproduce" else "quickstart")
        if not args.dry_run:
            check_outputs(out, args.runs, args.cache_root)
        kwargs = {"upstreams": tuple(args.upstreams)} if args.upstreams else {}
        written = reproduce(profile=profile, out=out, runs=args.runs, data_root=args.data_root,
                            cache_root=args.cache_root, tasks=tuple(args.tasks) if args.tasks else None,
                            protocols=tuple(args.protocols) if args.protocols else None, force=tuple(args.force),
                            dry_run=args.dry_run, progress=args.progress, quick=args.plan == "quickstart",
                            command=command, render_only=args.render_only, seeds=args.seeds or 1,
                            executor=executor_options(args), log=log, **kwargs)
    else:
        data, name = _plan_from_args(args)
        out = args.out or Path("results") / f"sweep-{name}"
        if not args.dry_run:
            check_outputs(out, args.runs, args.cache_root)
        written = sweep(data, out, runs=args.runs, data_root=args.data_root, cache_root=args.cache_root,
                        profile=args.profile, force=tuple(args.force), dry_run=args.dry_run, progress=args.progress,
                        render_only=args.render_only, command=command, executor=executor_options(args), log=log)
    for path in written.values():
        print(f"wrote {path}")
    return 0
