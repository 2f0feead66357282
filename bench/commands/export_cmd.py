"""`bench export CKPT OUT.safetensors`: an M2D-architecture checkpoint's upstream weights as safetensors.

Only the bundle's `encoder` state is written (no optimiser, no predictor/target networks); its
`encoder_config`, `frontend_config`, `norm_stats`, `method` and the source checkpoint's sha256 go
into the safetensors metadata as JSON strings. `upstreams.load("m2d", ckpt="OUT.safetensors")` (or
`m2dx`) reads it back to the same hidden states. Training checkpoints are unchanged.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a checkpoint's upstream weights + configs as one .safetensors file")
    p.add_argument("ckpt", help="checkpoint: a pretraining run's checkpoint.pt, a weight bundle or an official M2D file")
    p.add_argument("out", help="output file, ending in .safetensors")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from bench.commands import output_errors
    from bench.errors import UserError
    from upstreams.checkpoints import read_checkpoint, write_safetensors
    from upstreams.fileio import sha256_file
    from upstreams.m2d.upstream import from_bundle

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the output must end in .safetensors (e.g. {out.with_suffix('.safetensors').name})")
    bundle = read_checkpoint(args.ckpt)  # CheckpointError (one line) when missing or unreadable
    if "encoder" not in bundle and any(k.endswith("patch_embed.proj.weight") for k in bundle.get("model", bundle)):
        from upstreams.m2d.convert import convert_official

        bundle = convert_official(bundle, source=args.ckpt)
    model = from_bundle(bundle, source=args.ckpt)  # validates the configs and that the weights fit
    method = bundle.get("method")
    with output_errors("pass a writable OUT.safetensors"):
        write_safetensors(model.bundle(method=method if isinstance(method, str) else None), out,
                          source_sha256=sha256_file(args.ckpt))
    n = sum(v.numel() for v in model.encoder.state_dict().values())
    print(f"wrote {out} ({n / 1e6:.2f} M encoder parameters, method {method or 'unknown'}); "
          f"load it with --upstream {method if method in ('m2d', 'm2dx') else 'm2d'} --ckpt {out}")
    return 0
