"""`bench data build|info`: the offline mini-benchmark."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="build or inspect the offline mini-benchmark")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    b = dsub.add_parser("build", help="build datasets in their native layouts (skips finished ones)")
    b.add_argument("--profile", default="mini", choices=["tiny", "mini"])
    b.add_argument("--root", default=None, help="data root (default: $BENCH_DATA or the user cache dir)")
    b.add_argument("--only", nargs="+", metavar="NAME", help="build only these datasets (and what they need)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    b.set_defaults(func=_build)

    i = dsub.add_parser("info", help="show built datasets with sizes and manifest hashes")
    i.add_argument("--profile", default=None, choices=["tiny", "mini"])
    i.add_argument("--root", default=None)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)


def _build(args) -> int:
    from tasks.data import build

    build(args.profile, root=args.root, only=args.only, seed=args.seed, force=args.force, workers=args.workers)
    return 0


def _info(args) -> int:
    from tasks.data import data_root
    from tasks.data.build import info

    rows = info(args.profile, args.root)
    if args.json:
        from upstreams.fileio import dumps_strict

        print(dumps_strict(rows, indent=2))
        return 0
    if not rows:
        print(f"nothing built under {data_root(args.root)}; run `bench data build --profile mini`")
        return 0
    print(f"data root: {data_root(args.root)}")
    print(f"{'profile':7} {'dataset':16} {'files':>6} {'MB':>8} {'build s':>8}  manifest         summary")
    for r in rows:
        summ = ", ".join(f"{k}={v}" for k, v in r["summary"].items() if not isinstance(v, (dict, list)))
        print(
            f"{r['profile']:7} {r['dataset']:16} {r['files']:6d} {r['mb']:8.1f} {r['build_s'] or 0:8.1f}"
            f"  {r['manifest_sha256']}  {summ}"
        )
    return 0
