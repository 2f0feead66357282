"""`bench reproduce`: data, pretraining, evaluation, tables, plots and the claims report."""

from __future__ import annotations

import sys

from .quickstart_cmd import add_common, check_outputs, executor_options, invoked_command


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="run the whole study (data, pretraining, evaluation, leaderboard, report)",
        description="Build the mini-benchmark, pretrain m2d, m2dx (respiratory, background noise) and SCORE-tune m2d, "
        "evaluate fbank, random, m2d, m2dx and score on all six tasks, then write leaderboard.csv, tasks/*.csv, "
        "leaderboard.png, plots/*.png and report.md. Finished stages are skipped on re-runs (matching hashes); "
        "an interrupted run resumes where it stopped.")
    p.add_argument("--profile", default="mini", choices=["tiny", "mini"], help="data profile (default mini)")
    p.add_argument("--out", default=None, help="results directory (default results/<profile>)")
    p.add_argument("--runs", default=None, help="pretraining run directory root (default $BENCH_RUNS or ./runs; runs go to <root>/<method>/reproduce-<profile>)")
    add_common(p)
    p.add_argument("--render-only", action="store_true",
                   help="run no stage: write the tables, plots and report from the stages finished so far")
    p.add_argument("--force", nargs="+", default=[], metavar="STAGE", help="redo these stages (or 'all')")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from bench.study.plans import UPSTREAMS
    from bench.study.reproduce import reproduce

    if not args.dry_run:
        check_outputs(args.out or Path("results") / args.profile, args.runs, args.cache_root)
    written = reproduce(
        profile=args.profile, out=args.out, runs=args.runs, data_root=args.data_root, cache_root=args.cache_root,
        upstreams=tuple(args.upstreams or UPSTREAMS), tasks=tuple(args.tasks) if args.tasks else None,
        protocols=tuple(args.protocols) if args.protocols else None, force=tuple(args.force), dry_run=args.dry_run,
        progress=args.progress, render_only=args.render_only, executor=executor_options(args), seeds=args.seeds, command=invoked_command('reproduce'), log=lambda m: print(m, file=sys.stderr, flush=True))
    for name, path in written.items():
        print(f"wrote {path}")
    return 0
