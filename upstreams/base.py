"""The one embedding API every upstream implements.

An upstream is a `torch.nn.Module` that takes a list of 1-D waveforms of any lengths and
returns one `[B, T, D]` tensor per layer plus the number of valid frames per item. Padding is an
implementation detail of each upstream, never visible to callers: outputs for an item must not
depend on what else is in the batch (tests check this batch consistency for every upstream).

This mirrors s3prl's `hidden_states` contract (so its `Featurizer` works through
`upstreams.s3prl_adapter`) and HEAR's scene/timestamp embeddings (through `upstreams.hear`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["UpstreamOutput", "Upstream", "validate_waveforms", "pad_waveforms", "masked_mean"]


@dataclass
class UpstreamOutput:
    """Per-layer frame features. `hidden_states[l][b, :lengths[b]]` are item b's valid frames."""

    hidden_states: tuple[Tensor, ...]
    lengths: Tensor  # [B] int64

    # s3prl and dict-style callers index by key
    def __getitem__(self, key: str):
        if key == "hidden_states":
            return list(self.hidden_states)
        if key == "last_hidden_state":
            return self.hidden_states[-1]
        if key == "lengths":
            return self.lengths
        raise KeyError(key)

    def __contains__(self, key: str) -> bool:
        return key in ("hidden_states", "last_hidden_state", "lengths")

    def keys(self) -> Iterator[str]:
        return iter(("hidden_states", "last_hidden_state", "lengths"))


def validate_waveforms(wavs: Sequence[Tensor]) -> list[Tensor]:
    """Check the input contract and return float32 1-D tensors; errors name the offending index."""
    if isinstance(wavs, Tensor):
        raise ValueError(
            "upstreams take a list of 1-D waveforms (any lengths), not a single tensor; "
            "use list(batch) for a [B, samples] tensor"
        )
    if len(wavs) == 0:
        raise ValueError("empty batch: pass at least one waveform")
    out = []
    for i, w in enumerate(wavs):
        if not isinstance(w, Tensor):
            raise ValueError(f"waveform {i}: expected a torch.Tensor, got {type(w).__name__}")
        if w.dim() != 1:
            raise ValueError(f"waveform {i}: expected a 1-D tensor (samples,), got shape {tuple(w.shape)}")
        if w.numel() == 0:
            raise ValueError(f"waveform {i}: empty (0 samples)")
        if not torch.is_floating_point(w):
            raise ValueError(f"waveform {i}: expected floating point samples, got {w.dtype}")
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"waveform {i}: contains NaN or infinite samples")
        out.append(w.float())
    return out


def pad_waveforms(wavs: Sequence[Tensor], device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Right-pad with zeros to `[B, max_len]`; returns (padded, lengths)."""
    lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(list(wavs), batch_first=True)
    if device is not None:
        padded, lengths = padded.to(device), lengths.to(device)
    return padded, lengths


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over the valid frames of `[B, T, D]` -> `[B, D]`."""
    mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    mask = mask.to(x.dtype).unsqueeze(-1)
    return (x * mask).sum(1) / mask.sum(1).clamp_min(1)


class Upstream(nn.Module):
    """Base class: validates input, delegates to `encode`, offers scene embeddings.

    Subclasses set `sample_rate`, `downsample_rate`, `hidden_sizes` and `first_frame_center`
    (seconds from the start of the audio to the centre of frame 0, for HEAR timestamps) and
    implement `encode(wavs)` on validated float32 waveforms already on the module's device.

    `frames_per_window`: upstreams that encode long audio in independent fixed-size windows
    (the M2D ViTs: the pretraining crop, each with its own position embeddings) set it to the
    number of output frames per window, so frame t sits at within-window position
    `t % frames_per_window`; frame-level protocols use it to remove what frames share by
    position alone (QbE's position removal). None (the default) = no windowing.
    """

    sample_rate: int = 16000
    downsample_rate: int = 160
    hidden_sizes: list[int]
    first_frame_center: float = 0.0
    frames_per_window: int | None = None
    name: str = "upstream"

    def __init__(self) -> None:
        super().__init__()
        # parameter-free upstreams still need to know their device
        self.register_buffer("_device_tracker", torch.zeros(0), persistent=False)
        self.checkpoint_path: str | None = None
        self.checkpoint_sha256: str | None = None
        self.options: dict = {}

    @property
    def num_layers(self) -> int:
        return len(self.hidden_sizes)

    @property
    def device(self) -> torch.device:
        return self._device_tracker.device

    @property
    def frame_seconds(self) -> float:
        return self.downsample_rate / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        """Valid output frames for a waveform of `num_samples` (subclasses override if needed)."""
        return max(1, math.ceil(num_samples / self.downsample_rate))

    def encode(self, wavs: list[Tensor]) -> UpstreamOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, wavs: Sequence[Tensor]) -> UpstreamOutput:
        wavs = [w.to(self.device) for w in validate_waveforms(wavs)]
        out = self.encode(wavs)
        return UpstreamOutput(tuple(h.float() for h in out.hidden_states), out.lengths.long().cpu())

    def scene_embeddings(self, wavs: Sequence[Tensor], layer: int = -1) -> Tensor:
        """Clip embedding `[B, D]`: mean over valid frames of `layer` (default: last)."""
        out = self(wavs)
        return masked_mean(out.hidden_states[layer], out.lengths)

    # s3prl's Featurizer asks for this
    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        return self.downsample_rate

    def describe(self) -> dict:
        """Identity for result records and caches."""
        return {
            "name": self.name,
            "options": dict(self.options),
            "checkpoint": self.checkpoint_path,
            "checkpoint_sha256": self.checkpoint_sha256,
            "sample_rate": self.sample_rate,
            "downsample_rate": self.downsample_rate,
            "num_layers": self.num_layers,
            "hidden_sizes": list(self.hidden_sizes),
        }
