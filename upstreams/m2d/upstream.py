"""M2D-architecture upstreams and their weight bundle (`random`, `m2d`, `m2dx`).

A weight bundle is a plain dict that `torch.load(weights_only=True)` accepts:
`encoder_config`, `frontend_config`, `norm_stats` [mean, std] and `encoder` (state dict), plus
whatever else a training checkpoint carries (`config`, `step`, optimiser state, ...). Any
pretraining checkpoint of this suite is therefore directly loadable as an upstream.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from ..base import Upstream, UpstreamOutput
from ..checkpoints import load_state_strict, read_checkpoint
from ..errors import CheckpointError, OptionError
from ..fileio import sha256_file
from ..frontend import LogMel, LogMelConfig
from .encoder import ENCODER_PRESETS, EncoderConfig, M2DEncoder

__all__ = ["M2DUpstream", "encoder_bundle", "from_bundle", "load_bundle"]

DEFAULT_NORM_STATS = (-7.1, 4.2)  # M2D's AudioSet statistics


class M2DUpstream(Upstream):
    """Log-mel front end + M2D ViT; frames every `hop * patch width` samples (160 ms or 40 ms)."""

    def __init__(
        self,
        encoder_config: EncoderConfig,
        frontend_config: LogMelConfig = LogMelConfig(),
        norm_stats: tuple[float, float] = DEFAULT_NORM_STATS,
        max_windows: int = 64,
    ):
        super().__init__()
        self.frontend = LogMel(frontend_config, *norm_stats)
        self.encoder = M2DEncoder(encoder_config)
        self.max_windows = max_windows
        pt = encoder_config.patch_size[1]
        self.sample_rate = frontend_config.sample_rate
        self.downsample_rate = frontend_config.hop_length * pt
        self.first_frame_center = (pt - 1) / 2 * frontend_config.hop_length / frontend_config.sample_rate
        self.hidden_sizes = [encoder_config.frame_dim] * self.encoder.num_layers
        # M2DEncoder.cut_windows starts a new window every `input_frames` mel frames
        self.frames_per_window = encoder_config.grid[1]

    def num_frames(self, num_samples: int) -> int:
        mel_frames = num_samples // self.frontend.config.hop_length + 1
        return math.ceil(mel_frames / self.encoder.config.patch_size[1])

    def encode(self, wavs: list[Tensor]) -> UpstreamOutput:
        mel, lengths = self.frontend(wavs)
        states, out_lengths = self.encoder(mel, lengths, max_windows=self.max_windows)
        return UpstreamOutput(tuple(states), out_lengths)

    def layer_modules(self) -> list[torch.nn.Module]:
        """The transformer blocks, bottom to top (partial fine-tuning such as SCORE trains the top k)."""
        return list(self.encoder.blocks)

    def output_modules(self) -> list[torch.nn.Module]:
        """Modules after the last block that shape the top layer's output (the final LayerNorm)."""
        return [self.encoder.norm]

    def bundle(self, **extra) -> dict:
        return encoder_bundle(self.encoder, self.frontend, **extra)


def encoder_bundle(encoder: M2DEncoder, frontend: LogMel, **extra) -> dict:
    """The plain-dict weight bundle described in the module docstring."""
    return {
        "encoder_config": encoder.config.to_dict(),
        "frontend_config": frontend.config.to_dict(),
        "norm_stats": [float(x) for x in frontend.norm_stats.tolist()],
        "encoder": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        **extra,
    }


def from_bundle(bundle: dict, source: str | Path = "checkpoint", max_windows: int = 64) -> M2DUpstream:
    missing = [k for k in ("encoder_config", "encoder") if k not in bundle]
    if missing:
        raise CheckpointError(
            f"{source} is not an M2D weight bundle (missing {', '.join(missing)}; has {', '.join(sorted(bundle)[:8])}); "
            f"official nttcslab checkpoints load through upstreams.m2d.convert"
        )
    try:
        enc_cfg = EncoderConfig.from_dict(bundle["encoder_config"])
        fe_cfg = LogMelConfig(**bundle.get("frontend_config", {}))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: invalid encoder or front-end config ({exc})") from exc
    stats = tuple(bundle.get("norm_stats", DEFAULT_NORM_STATS))
    model = M2DUpstream(enc_cfg, fe_cfg, stats, max_windows=max_windows)
    load_state_strict(model.encoder, bundle["encoder"], source)
    return model


def load_bundle(path: str | Path, max_windows: int = 64) -> M2DUpstream:
    """A bundle, a training checkpoint, an official nttcslab checkpoint or a `bench export` .safetensors file."""
    bundle = read_checkpoint(path)  # rebuilds the bundle dict from a .safetensors file
    if "encoder" not in bundle and any(k.endswith("patch_embed.proj.weight") for k in bundle.get("model", bundle)):
        from .convert import convert_official  # official nttcslab checkpoint

        bundle = convert_official(bundle, source=path)
    model = from_bundle(bundle, source=path, max_windows=max_windows)
    model.checkpoint_path = str(path)
    model.checkpoint_sha256 = sha256_file(path)
    model.source_checkpoint_sha256 = bundle.get("source_sha256")  # set for a `bench export` safetensors file
    return model


def random_upstream(arch: str = "mini", seed: int = 0, max_windows: int = 64) -> M2DUpstream:
    if arch not in ENCODER_PRESETS:
        raise OptionError(f"unknown arch '{arch}'; choose one of {', '.join(ENCODER_PRESETS)}")
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = M2DUpstream(ENCODER_PRESETS[arch], max_windows=max_windows)
    finally:
        torch.random.set_rng_state(gen_state)
    return model
