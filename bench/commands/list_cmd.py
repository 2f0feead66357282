"""`bench list upstreams|tasks`."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered upstreams or tasks")
    p.add_argument("what", choices=["upstreams", "tasks"])
    p.set_defaults(func=_run)


def _run(args) -> int:
    if args.what == "upstreams":
        import upstreams

        for name in upstreams.names():
            inf = upstreams.info(name)
            opts = ", ".join(f"{k}={v!r}" for k, v in inf.options.items())
            ckpt = " [needs --ckpt or a pretraining run]" if inf.needs_checkpoint else ""
            print(f"{name:10} {inf.description}{ckpt}")
            if opts:
                print(f"{'':10}   options: {opts}")
        print("also: hear:PKG.MODULE (any HEAR 2021 module) and s3prl:NAME (any s3prl upstream; weights: --ckpt)")
        return 0
    from tasks.registry import TASKS

    for t in TASKS.values():
        print(f"{t.name:16} {t.metric} ({'higher' if t.higher_is_better else 'lower'} is better); "
              f"protocols: {', '.join(t.protocols)} (default {t.default_protocol})")
        print(f"{'':16} {t.description}")
    return 0
