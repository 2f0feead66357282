"""`bench leaderboard`: records -> CSV + heatmap."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="aggregate result records into a CSV and a heatmap")
    p.add_argument("--results", default="results", help="results directory holding records/ (default: results)")
    p.add_argument("--csv", default=None, help="CSV path (default: <results>/leaderboard.csv)")
    p.add_argument("--plot", default=None, help="PNG path (default: <results>/leaderboard.png)")
    p.add_argument("--profile", default=None, help="only records made on this data profile (tiny, mini, or '' for real)")
    p.add_argument("--html", default=None, metavar="DIR",
                   help="also write DIR/index.html: one self-contained page (sortable tables, claims, record drill-down)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from bench.errors import UserError
    from bench.results.leaderboard import leaderboard, write_csv
    from bench.results.plots import fmt_score, heatmap
    from upstreams.fileio import writable_problem

    results = Path(args.results)
    if results.exists() and not results.is_dir():
        raise UserError(f"--results {results}: is a file, not a results folder (the one holding records/)")
    targets = [("--csv", args.csv, results / "leaderboard.csv"), ("--plot", args.plot, results / "leaderboard.png")]
    for flag, given, default in targets:  # before any work: fail in one line, not after the table is built
        problem = writable_problem(given or default, kind="file")
        if problem:
            where = f"{flag} {given}" if given else f"--results {results} ({default.name})"
            raise UserError(f"{where}: {problem}; pass a writable {flag} FILE")
    df = leaderboard(results, profile=args.profile)
    if df.empty:
        raise UserError(f"no result records under {results / 'records'}; run `bench run --upstream U --task T` first")
    outputs = []
    for (flag, given, default), write in zip(targets, (write_csv, heatmap)):
        try:
            outputs.append(write(df, given or default))
        except OSError as exc:
            raise UserError(f"{flag} {given or default}: could not write it ({exc.strerror or exc}); the records "
                            f"are untouched - rerun with a writable {flag} FILE") from None
    csv, png = outputs
    if args.html:  # the page embeds the records the rows point at
        from bench.results.html_report import write_html
        from bench.results.records import read_records

        try:
            outputs.append(write_html(df, read_records(results), args.html, title=f"bench leaderboard ({results})"))
        except OSError as exc:
            raise UserError(f"--html {args.html}: could not write index.html there ({exc.strerror or exc}); "
                            "pass a writable --html DIR") from None
        print(f"wrote {outputs[-1]}")
    variants = _variants(df)
    for i, r in df.iterrows():
        std = f" ± {fmt_score(r['metric'], r['std'])}" if r["std"] == r["std"] and r["std"] is not None else ""
        print(f"{r['task']:16} {r['protocol']:9} {r['upstream']:10} {r['metric']:12} {fmt_score(r['metric'], r['score'])}{std}"
              + (f"  [{variants[i]}]" if variants[i] else ""))
    print(f"wrote {csv} and {png}")
    return 0


def _variants(df) -> list[str]:
    """For rows sharing task, protocol and upstream: what sets each apart (folds, seeds, options), else ''."""
    import json

    out = [""] * len(df)
    for _, g in df.groupby(["task", "protocol", "upstream"], sort=False):
        if len(g) < 2:
            continue
        opts = {i: json.loads(r["run_options"] or "{}") for i, r in g.iterrows()}
        keys = sorted({k for o in opts.values() for k in o})
        for i, r in g.iterrows():
            parts = [f"{c} {r[c]}" for c in ("folds", "seeds", "profile", "checkpoint_sha256", "upstream_options")
                     if g[c].nunique() > 1]
            parts += [f"{k}={json.dumps(opts[i].get(k))}" for k in keys
                      if len({json.dumps(o.get(k), sort_keys=True) for o in opts.values()}) > 1]
            out[i] = ", ".join(parts)
    return out
