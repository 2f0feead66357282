"""`bench leaderboard`: records -> CSV + heatmap."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="aggregate result records into a CSV and a heatmap")
    p.add_argument("--results", default="results", help="results directory holding records/ (default: results)")
    p.add_argument("--csv", default=None, help="CSV path (default: <results>/leaderboard.csv)")
    p.add_argument("--plot", default=None, help="PNG path (default: <results>/leaderboard.png)")
    p.add_argument("--profile", default=None, help="only records made on this data profile (tiny, mini, or '' for real)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from bench.errors import UserError
    from bench.leaderboard import leaderboard, write_csv
    from bench.plots import fmt_score, heatmap

    results = Path(args.results)
    df = leaderboard(results, profile=args.profile)
    if df.empty:
        raise UserError(f"no result records under {results / 'records'}; run `bench run --upstream U --task T` first")
    csv = write_csv(df, args.csv or results / "leaderboard.csv")
    png = heatmap(df, args.plot or results / "leaderboard.png")
    for _, r in df.iterrows():
        std = f" ± {fmt_score(r['metric'], r['std'])}" if r["std"] == r["std"] and r["std"] is not None else ""
        print(f"{r['task']:16} {r['protocol']:9} {r['upstream']:10} {r['metric']:12} {fmt_score(r['metric'], r['score'])}{std}")
    print(f"wrote {csv} and {png}")
    return 0
