"""The HEAR 2021 functions, written once for any upstream.

HEAR passes `[n, samples]` tensors at the model's sample rate and wants float32
`[n, T, D]` embeddings with timestamps in milliseconds at frame centres, evenly spaced and never
past the end of the audio. Frame t of an upstream is centred at
`first_frame_center + t * downsample_rate / sample_rate`; a final partial frame whose centre would
fall past the end is dropped so every timestamp lies inside the clip.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["HearModel", "make_load_model", "get_timestamp_embeddings", "get_scene_embeddings"]


class HearModel(nn.Module):
    """Wraps an upstream with the attributes HEAR asks for (last layer is the embedding)."""

    def __init__(self, upstream: nn.Module, layer: int = -1):
        super().__init__()
        self.upstream = upstream.eval()
        self.layer = layer
        self.sample_rate = int(upstream.sample_rate)
        self.scene_embedding_size = int(upstream.hidden_sizes[layer])
        self.timestamp_embedding_size = int(upstream.hidden_sizes[layer])


def make_load_model(upstream_name: str) -> Callable[..., HearModel]:
    def load_model(model_file_path: str = "", **options) -> HearModel:
        import upstreams

        ckpt = model_file_path or None
        return HearModel(upstreams.load(upstream_name, ckpt=ckpt, **options))

    load_model.__doc__ = f"HEAR load_model for '{upstream_name}'; model_file_path is its checkpoint (optional)."
    return load_model


def _as_list(audio: Tensor, model: HearModel) -> list[Tensor]:
    if audio.dim() != 2:
        raise ValueError(f"HEAR audio must be [n_sounds, n_samples], got shape {tuple(audio.shape)}")
    return list(audio.float())


@torch.no_grad()
def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    up = model.upstream
    out = up(_as_list(audio, model))
    emb = out.hidden_states[model.layer]
    n_samples = audio.shape[1]
    hop = up.downsample_rate / up.sample_rate
    duration = n_samples / up.sample_rate
    centres = up.first_frame_center + hop * torch.arange(emb.shape[1], dtype=torch.float64)
    keep = int((centres <= duration + 1e-9).sum().clamp_min(1))
    timestamps = (centres[:keep] * 1000.0).float().unsqueeze(0).expand(audio.shape[0], -1)
    return emb[:, :keep].float().contiguous(), timestamps.to(emb.device).contiguous()


@torch.no_grad()
def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    return model.upstream.scene_embeddings(_as_list(audio, model), layer=model.layer).float()
