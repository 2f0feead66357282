"""Official nttcslab M2D checkpoints -> this suite's M2D weight bundle.

What the official files look like (nttcslab/m2d: `train_audio.py` + MAE's `misc.save_model`,
`examples/portable_m2d.py`, `util/to_encoder_only_weight.py`, the EVAR fine-tuning output):

- pretraining: `{"model": state, "optimizer", "epoch", "scaler", "args": argparse.Namespace}`;
  encoder-only files: the bare `state`; EVAR fine-tuned: flat keys under `module.ar.runtime.backbone.`
  (plus `module.head.*`). A `module.` prefix appears when saved from DDP.
- encoder keys follow timm's ViT: `cls_token [1, 1, D]`, `pos_embed [1, 1 + F*T, D]` (fixed sin-cos,
  CLS row zero), `patch_embed.proj.{weight [D, 1, pf, pt], bias}`, `blocks.{i}.{norm1, attn.qkv,
  attn.proj, norm2, mlp.fc1, mlp.fc2}.*`, `norm.*` - the same names as `M2DEncoder`;
  M2D adds `target_blocks.*`, `target_norm.*` (EMA target), `mask_token` and `decoder_{embed, blocks,
  norm, pred}.*` (the predictor; `decoder_pred` maps to D), `norm_stats` ([mean, std]) in newer files.
- the input and patch size live in the run folder name: `m2d_vit_base-80x608p16x16-221006-mr7/`
  (`<model>-<mels>x<frames>p<pf>x<pt>[p<32k>]-...`).

Their positions put TIME in the first half of the channels (MAE's `get_2d_sincos_pos_embed` meshes
w before h), the opposite of this suite's default; the bundle records `pos_embed_order: "tf"` so the
encoder rebuilds exactly the table the weights were trained with (checked against `pos_embed`).
Target and predictor weights are kept (`m2d_target`, `m2d_predictor`) so `--init` can continue
M2D training from an official checkpoint.

Usage: `upstreams.load("m2d", ckpt=<official .pth>)` converts on the fly; or
`python -m upstreams.m2d.convert SRC.pth DEST.pt` writes a bundle once.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..frontend import LogMelConfig
from .encoder import EncoderConfig, sincos_pos_embed_2d
from .model import PredictorConfig

__all__ = ["convert_official", "parse_run_name", "find_prefix"]

DEFAULT_NORM_STATS = (-7.1, 4.2)  # M2D's AudioSet statistics, used by files that do not store theirs
RUN_NAME = re.compile(r"^(?P<model>[^-]+)-(?P<mels>\d+)x(?P<frames>\d+)p(?P<pf>\d+)x(?P<pt>\d+)(?:p(?P<sr>\d+k))?(?:-|$)")
FRONTENDS = {
    "16k": LogMelConfig(),
    "32k": LogMelConfig(sample_rate=32000, n_fft=800, win_length=800, hop_length=320, f_max=16000.0),
}


def parse_run_name(name: str) -> dict | None:
    """`m2d_vit_base-80x608p16x16-221006-mr7` -> {model, n_mels, frames, patch, sr}; None if not that form."""
    m = RUN_NAME.match(name)
    if not m:
        return None
    return {"model": m["model"], "n_mels": int(m["mels"]), "frames": int(m["frames"]),
            "patch": (int(m["pf"]), int(m["pt"])), "sr": m["sr"] or "16k"}


def find_prefix(state: dict, anchor: str = "patch_embed.proj.weight") -> str:
    """The key prefix in front of the encoder (`""`, `module.`, `module.ar.runtime.backbone.`, ...)."""
    found = sorted((k[: -len(anchor)] for k in state if k.endswith(anchor)), key=len)
    found = [p for p in found if "target" not in p and "teacher" not in p] or found
    if not found:
        raise CheckpointError(f"no '{anchor}' key: not an M2D/ViT checkpoint")
    return found[0]


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _is_encoder_key(k: str) -> bool:
    return k in ("cls_token", "norm.weight", "norm.bias") or k.startswith(("patch_embed.proj.", "blocks."))


def _depth(state: dict, prefix: str) -> int:
    idx = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    if not idx or idx != set(range(max(idx) + 1)):
        raise CheckpointError(f"blocks under '{prefix}' are missing or not numbered 0..n-1: {sorted(idx)[:8]}")
    return max(idx) + 1


def _pos_order(pos: Tensor, gf: int, gt: int, source) -> str:
    """Which sin-cos layout `pos_embed [1, 1 + gf*gt, D]` is; raises if it is neither."""
    table = pos[0, 1:].float().reshape(gf, gt, -1)
    for order in ("tf", "ft"):
        if torch.allclose(table, sincos_pos_embed_2d(table.shape[-1], gf, gt, order), atol=1e-4):
            return order
    raise CheckpointError(f"{source}: pos_embed is not a fixed 2-D sin-cos table (learned or resized positions are not supported)")


def convert_official(checkpoint: dict, source: str | Path = "checkpoint", num_heads: int | None = None) -> dict:
    """Official checkpoint dict (as loaded) -> weight bundle (see `upstreams.m2d.upstream`).

    `num_heads` is not stored in the weights; the default D // 64 holds for ViT-S/B/L (6/12/16 heads).
    """
    state = checkpoint["model"] if isinstance(checkpoint.get("model"), dict) else checkpoint
    prefix = find_prefix(state)
    sd = _strip(state, prefix)
    w = sd["patch_embed.proj.weight"]
    if w.dim() != 4 or w.shape[1] != 1:
        raise CheckpointError(f"{source}: patch_embed.proj.weight {tuple(w.shape)} is not a 1-channel spectrogram patch embedding")
    d, pf, pt = w.shape[0], w.shape[2], w.shape[3]
    named = parse_run_name(Path(source).parent.name) or {}
    n_mels = named.get("n_mels", 80)
    if n_mels % pf:
        raise CheckpointError(f"{source}: {n_mels} mel bins are not a multiple of the patch height {pf}")
    gf = n_mels // pf
    if "pos_embed" in sd:
        n_patches = sd["pos_embed"].shape[1] - 1
        if n_patches % gf:
            raise CheckpointError(f"{source}: pos_embed has {n_patches} patches, not a multiple of {gf} frequency rows")
        gt = n_patches // gf
        order = _pos_order(sd["pos_embed"], gf, gt, source)
    elif "frames" in named:
        gt, order = named["frames"] // pt, "tf"
    else:
        raise CheckpointError(f"{source}: no pos_embed and no '<mels>x<frames>p<pf>x<pt>' run folder name to read the input size from")
    if named.get("patch", (pf, pt)) != (pf, pt):
        raise CheckpointError(f"{source}: folder name says patch {named['patch']}, weights say {(pf, pt)}")
    depth = _depth(sd, "blocks.")
    heads = num_heads or max(1, d // 64)
    enc_cfg = EncoderConfig(
        embed_dim=d, depth=depth, num_heads=heads, mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / d,
        patch_size=(pf, pt), input_frames=gt * pt, n_mels=n_mels, qkv_bias="blocks.0.attn.qkv.bias" in sd,
        pos_embed_order=order,
    )
    encoder = {k: v for k, v in sd.items() if _is_encoder_key(k)}
    if "pos_embed" in sd:  # official code adds the (zero) CLS position to the CLS token: fold it in
        encoder["cls_token"] = encoder["cls_token"] + sd["pos_embed"][:, :1]
    stats = sd.get("norm_stats", checkpoint.get("norm_stats"))
    stats_source = "checkpoint" if stats is not None else "default"
    stats = [float(x) for x in (stats if stats is not None else DEFAULT_NORM_STATS)]
    sr = named.get("sr", "16k")
    if sr not in FRONTENDS:
        raise CheckpointError(f"{source}: unknown sampling rate tag p{sr} in the folder name (known: {', '.join(FRONTENDS)})")
    bundle = {
        "encoder_config": enc_cfg.to_dict(),
        "frontend_config": FRONTENDS[sr].to_dict(),
        "norm_stats": stats,
        "encoder": encoder,
        "converted_from": {"source": str(source), "format": "nttcslab-m2d", "prefix": prefix,
                           "run_name": Path(source).parent.name, "norm_stats": stats_source,
                           "dropped_keys": len(state) - len(encoder)},
    }
    if "target_blocks.0.norm1.weight" in sd:
        bundle["m2d_target"] = {**{f"blocks.{k}": v for k, v in _strip(sd, "target_blocks.").items()},
                                **{f"norm.{k}": v for k, v in _strip(sd, "target_norm.").items()}}
    pred = sd.get("decoder_pred.weight")
    if pred is not None and pred.shape[0] == d and "decoder_embed.weight" in sd:  # M2D's predictor (MAE's predicts pixels)
        dp = sd["decoder_embed.weight"].shape[0]
        bundle["m2d_predictor"] = {
            "embed.weight": sd["decoder_embed.weight"], "embed.bias": sd["decoder_embed.bias"],
            "mask_token": sd["mask_token"],
            **{f"blocks.{k}": v for k, v in _strip(sd, "decoder_blocks.").items()},
            "norm.weight": sd["decoder_norm.weight"], "norm.bias": sd["decoder_norm.bias"],
            "out.weight": sd["decoder_pred.weight"], "out.bias": sd["decoder_pred.bias"],
        }
        bundle["predictor_config"] = PredictorConfig(
            embed_dim=dp, depth=_depth(sd, "decoder_blocks."), num_heads=max(1, dp // 32),
            mlp_ratio=sd["decoder_blocks.0.mlp.fc1.weight"].shape[0] / dp,
        ).to_dict()
    return bundle


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ..checkpoints import read_checkpoint
    from ..fileio import atomic_path

    p = argparse.ArgumentParser(prog="python -m upstreams.m2d.convert", description=__doc__.split("\n")[0])
    p.add_argument("src", help="official checkpoint (keep it in its run folder: the name encodes the input size)")
    p.add_argument("dest", help="weight bundle to write (loadable with upstreams.load('m2d', ckpt=DEST))")
    p.add_argument("--num-heads", type=int, default=None, help="attention heads (default: embed_dim // 64)")
    args = p.parse_args(argv)
    bundle = convert_official(read_checkpoint(args.src), source=args.src, num_heads=args.num_heads)
    with atomic_path(args.dest, suffix=".pt") as tmp:
        torch.save(bundle, tmp)
    cfg = bundle["encoder_config"]
    print(f"{args.dest}: {cfg['embed_dim']}-d x {cfg['depth']} layers, patch {cfg['patch_size']}, "
          f"window {cfg['input_frames']} frames, norm stats {bundle['norm_stats']} ({bundle['converted_from']['norm_stats']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
