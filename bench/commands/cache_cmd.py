"""`bench cache info|clear`: the embedding cache."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("cache", help="inspect or clear the embedding cache")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    i = csub.add_parser("info", help="list cache entries with sizes")
    i.add_argument("--cache-root", default=None)
    i.set_defaults(func=_info)
    c = csub.add_parser("clear", help="delete cache entries (all, or one upstream's)")
    c.add_argument("--upstream", default=None)
    c.add_argument("--cache-root", default=None)
    c.set_defaults(func=_clear)


def _info(args) -> int:
    from bench.cache import EmbeddingCache

    cache = EmbeddingCache(args.cache_root)
    rows = cache.entries()
    print(f"cache root: {cache.root}  ({len(rows)} entries, {sum(r['mb'] for r in rows):.1f} MB)")
    for r in rows:
        print(f"  {r['key']}  {r['mb']:8.1f} MB  {r['upstream'] or '?':12} {r['task'] or '?':16} "
              f"{r['pooling'] or '?':6} {r['examples'] or 0:6} ex  dataset {r['dataset']}  used {r['last_used']}")
    return 0


def _clear(args) -> int:
    from bench.cache import EmbeddingCache

    cache = EmbeddingCache(args.cache_root)
    n = cache.clear(args.upstream)
    print(f"removed {n} cache entr{'y' if n == 1 else 'ies'} from {cache.root}")
    return 0
