"""`bench pretrain m2d|m2dx|score`: train a representation; the run becomes an upstream checkpoint.

The work is done by `upstreams.training.run.pretrain`; this module only maps command-line options
onto config overrides. Methods are listed in `upstreams.training.run.METHODS` (SCORE registers
there). A method-specific flag (SCORE's `--base`) is added in `add_parser` and mapped onto its config
key in `_overrides`, like `--init` below; anything else is reachable with `--set`.
"""

from __future__ import annotations

import sys

METHOD_NAMES = ("m2d", "m2dx", "score")

EPILOG = """\
examples:
  bench pretrain m2d --config tiny                      # seconds, a smoke run
  bench pretrain m2d --config mini                      # the clip-task recipe: ~8 min on one idle core
  bench pretrain m2d --config mini_speech               # 40 ms frames for PR/ASR/QbE (and SCORE's base)
  bench pretrain m2d --config my.yaml --set train.steps=5000
  bench pretrain m2d --resume --out runs/m2d/mini-20250101-120000
  bench pretrain m2dx --config mini_respiratory --init runs/m2d/<run>/checkpoint.pt
  bench pretrain m2dx --config mini_respiratory          # --init and teacher: the newest m2d run
  bench pretrain score --config mini --base m2d          # SCORE fine-tuning of the latest m2d run
  torchrun --standalone --nproc_per_node 2 -m bench.cli pretrain m2d --config mini   # DDP (gloo/NCCL)

On a busy shared CPU machine add --set train.threads=1 (or export OMP_WAIT_POLICY=PASSIVE): spinning
OpenMP workers can make two threads several times slower than one.
runs go to $BENCH_RUNS/<method>/<name> (default ./runs); the m2d/m2dx upstreams load the newest
<runs>/<method>/*/checkpoint.pt unless --ckpt is given.
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser(
        "pretrain",
        help="pretrain M2D / M2D-X (or fine-tune SCORE) into an upstream checkpoint",
        description="Pretrain a representation. Checkpoints are written atomically every "
        "train.checkpoint_every steps; --resume continues a killed run exactly.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("method", metavar="METHOD", help=f"one of: {', '.join(METHOD_NAMES)}")
    p.add_argument("--config", default=None, metavar="PRESET|FILE",
                   help="preset (m2d: tiny, mini, mini_speech, quick, mini_16x4, base; m2dx: tiny, tiny_supervised, mini, "
                   "mini_respiratory, mini_respiratory_supervised, base; score: tiny, mini, base) or a YAML/JSON file "
                   "of overrides "
                   "(may start from a preset with `preset: NAME`); default mini")
    p.add_argument("--out", default=None, metavar="DIR", help="run directory (default $BENCH_RUNS/<method>/<config>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (default: the newest run of METHOD) from its checkpoint")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from these weights (an M2D checkpoint of this suite or an official nttcslab one)")
    p.add_argument("--index", default=None, metavar="CSV", help="corpus index.csv (sets data.index)")
    p.add_argument("--base", default=None, metavar="UPSTREAM",
                   help="score: the upstream to fine-tune (default m2d; any upstream that exposes its layers)")
    p.add_argument("--base-ckpt", default=None, metavar="CKPT",
                   help="score: the base's checkpoint (default: its latest run)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (sets train.steps)")
    p.add_argument("--seed", type=int, default=None, help="sets train.seed")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="sets train.precision")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="sets train.device")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set train.batch_size=32 --set noise.eta=0.3 (repeatable)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=_run)


def _overrides(args) -> dict:
    from upstreams.training.config import merge, parse_assignments

    shortcuts: dict = {}
    if args.init is not None:
        shortcuts["init"] = args.init
    if args.index is not None:
        shortcuts.setdefault("data", {})["index"] = args.index
    if (args.base is not None or args.base_ckpt is not None) and args.method != "score":
        from bench.errors import UserError

        raise UserError(f"--base/--base-ckpt apply to `bench pretrain score` only (got `bench pretrain {args.method}`)")
    if args.base is not None:
        shortcuts["base"] = args.base
    if args.base_ckpt is not None:
        shortcuts["base_ckpt"] = args.base_ckpt
    for name, key in (("steps", "steps"), ("seed", "seed"), ("precision", "precision"), ("device", "device")):
        value = getattr(args, name)
        if value is not None:
            shortcuts.setdefault("train", {})[key] = value
    return merge(shortcuts, parse_assignments(args.assignments))


def _run(args) -> int:
    from upstreams.training.run import get_method, pretrain, resolve_config

    overrides = _overrides(args)
    if args.print_config:
        import yaml

        from upstreams.training.config import to_dict

        method = get_method(args.method)
        cfg, _ = resolve_config(method, args.config, overrides)
        sys.stdout.write(yaml.safe_dump({"method": method.name, **to_dict(cfg)}, sort_keys=False))
        return 0
    from bench.commands import output_errors

    with output_errors(f"the checkpoints written so far are kept: free space (or fix permissions) and continue with "
                       f"`bench pretrain {args.method} --resume --out <its run directory>`"):
        pretrain(args.method, config=args.config, out=args.out, resume=args.resume, overrides=overrides,
                 log=lambda msg: print(msg, file=sys.stderr, flush=True))
    return 0
