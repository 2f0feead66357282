"""Run a frozen upstream over a list of examples, batched by duration, streaming features to disk.

Features are written as they are produced into one float16 array of rows `[rows, layers, dim]`
with an index (`start`, `length` per example), so memory stays bounded by one batch whatever the
dataset size. `pooling="mean"` stores one row per example (the time mean of every layer over valid
frames); `pooling="frames"` stores every valid frame. With `pooling="mean"` a second array,
`features_ln.f16`, holds the time mean of each layer after layer-normalising every frame (s3prl's
`upstream_feature_normalize`): the `weighted` head's normalised input. Layer norm acts on frames, so
it cannot be applied to the pooled rows afterwards; everything after it in the SUPERB clip head is
linear, so the mean of normed frames is exactly what that head sees (tasks/heads.py). Audio for the next batch is read in a
background thread while the model runs.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tasks.audio import fixed_length
from tasks.datasets.base import AudioExample
from upstreams.base import masked_mean
from upstreams.batching import batches_by_duration

__all__ = ["ExtractionSettings", "extract_to", "autocast_context", "load_batch"]


@dataclass(frozen=True)
class ExtractionSettings:
    pooling: str = "mean"  # "mean" | "frames"
    clip_seconds: float | None = None  # crop / pad every example to this length (ICBHI cycles)
    pad_mode: str = "repeat"  # how short examples reach clip_seconds
    precision: str = "fp32"  # "fp32" | "bf16" (autocast)

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "frames"):
            raise ValueError(f"pooling must be 'mean' or 'frames', got {self.pooling!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")

    def key(self) -> dict:
        return {"pooling": self.pooling, "clip_seconds": self.clip_seconds, "pad_mode": self.pad_mode,
                "precision": self.precision, "layer_normed_mean": self.pooling == "mean"}


def autocast_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_batch(examples: Sequence[AudioExample], idx: Sequence[int], sample_rate: int,
               settings: ExtractionSettings) -> list[torch.Tensor]:
    wavs = [examples[i].load(sample_rate) for i in idx]
    if settings.clip_seconds is not None:
        n = int(round(settings.clip_seconds * sample_rate))
        wavs = [fixed_length(w, n, settings.pad_mode) for w in wavs]
    return wavs


def _num_samples(ex: AudioExample, sample_rate: int, settings: ExtractionSettings) -> int:
    if settings.clip_seconds is not None:
        return int(round(settings.clip_seconds * sample_rate))
    return max(1, int(round(ex.duration() * sample_rate)))


@torch.inference_mode()
def extract_to(
    directory: Path,
    upstream: torch.nn.Module,
    examples: Sequence[AudioExample],
    settings: ExtractionSettings,
    batch_seconds: float = 120.0,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Write `features.f16` + `index.npy` for `examples` into `directory`; returns shape metadata."""
    upstream.eval()
    sr = int(upstream.sample_rate)
    lengths = [_num_samples(ex, sr, settings) for ex in examples]
    batches = batches_by_duration(lengths, int(batch_seconds * sr))
    n_layers, dim = upstream.num_layers, int(upstream.hidden_sizes[-1])
    if len(set(upstream.hidden_sizes)) != 1:
        raise ValueError(f"{upstream.name}: layers of different widths {upstream.hidden_sizes} cannot be cached together")
    index = np.zeros((len(examples), 2), dtype=np.int64)  # start row, rows
    rows = 0
    pooled = settings.pooling == "mean"
    device = upstream.device
    bar = tqdm(total=round(sum(lengths) / sr), unit="audio-s", desc=f"extract {upstream.name}", disable=not progress,
               leave=False)
    with open(directory / "features.f16", "wb") as fh, ThreadPoolExecutor(max_workers=1) as pool, \
            (open(directory / "features_ln.f16", "wb") if pooled else contextlib.nullcontext()) as fh_ln:
        pending = pool.submit(load_batch, examples, batches[0], sr, settings) if batches else None
        for b, idx in enumerate(batches):
            wavs = pending.result()
            if b + 1 < len(batches):
                pending = pool.submit(load_batch, examples, batches[b + 1], sr, settings)
            with autocast_context(device, settings.precision):
                out = upstream(wavs)
            states = torch.stack([h.float() for h in out.hidden_states], dim=2)  # [B, T, L, D]
            for j, i in enumerate(idx):
                n = int(out.lengths[j])
                if pooled:
                    feats = masked_mean(states[j : j + 1].flatten(2), out.lengths[j : j + 1]).view(1, n_layers, dim)
                    normed = F.layer_norm(states[j : j + 1, :n], (dim,))
                    feats_ln = normed.mean(1).view(1, n_layers, dim).cpu().numpy().astype(np.float16)
                    fh_ln.write(feats_ln.tobytes())
                else:
                    feats = states[j, :n]
                arr = feats.cpu().numpy().astype(np.float16)
                if not np.isfinite(arr).all():
                    raise FloatingPointError(
                        f"{upstream.name} produced non-finite features for {examples[i].path} "
                        f"(float16 overflow or a broken checkpoint)"
                    )
                fh.write(arr.tobytes())
                index[i] = (rows, arr.shape[0])
                rows += arr.shape[0]
            bar.update(round(sum(lengths[i] for i in idx) / sr))
            if on_batch is not None:
                on_batch(b)
    bar.close()
    np.save(directory / "index.npy", index)
    return {"rows": rows, "layers": n_layers, "dim": dim, "examples": len(examples)}
