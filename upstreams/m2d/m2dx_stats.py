"""M2D-X statistics computed once at the start of a run: the noise level and the distillation target's scale.

Noise level. The paper mixes background noise in the linear power domain,
`eta * noise + (1 - eta) * main`; with the corpora at their recorded levels, eta alone would not say
how loud the noise is (a noise corpus 20 dB above the main one drowns it at any eta). The authors'
code therefore first shifts the noise log-mel so that its corpus mean equals the main corpus's mean
log-mel, i.e. scales the noise power by exp(main_mean - noise_mean), and only then mixes with eta.
`corpus_level` is that mean (over every frame and mel bin of a seeded sample of segments, the same
sample rule as the normalisation statistics) and `LevelMatched` is a noise corpus read through the
shift. The two levels are stored in the run config (`noise.levels`), so a resumed or repeated run
mixes at exactly the same level.

Distillation target. The teacher's final-layer frame features have large per-dimension offsets
(a ViT's residual stream carries a big common component), so a cosine loss against the raw
features is mostly won by predicting that common direction: a content-blind student would score
well. The authors' code standardises the target; here each of the teacher's frame dimensions is
standardised with a mean and std computed ONCE at the start of the run from the teacher's frames of
`clips` clean training crops (not per batch, so the target is a fixed function of the input, does
not depend on batch size or DDP rank, and is saved with the model as the `distill_mean`/`distill_std`
buffers of `M2DX`). Measured with a 30-step `tiny` M2D teacher on the tiny respiratory corpus (statistics
from 64 crops, floor on 64 other crops): the best constant vector scores 2 - 2 cos = 0.313 against the
raw frames and 2.076 against the standardised ones, i.e. standardising removes the content-blind
solution (the pre-issue-16 mini run's distillation loss, 2.004 -> 0.233, ended near such a floor).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..training.loop import Slot
from .data import MelCrops, MelFeatures

__all__ = ["corpus_level", "LevelMatched", "teacher_frame_stats"]


def corpus_level(features: MelFeatures, max_segments: int, seed: int) -> float:
    """Mean log-mel (natural log of mel power) over a seeded sample of `max_segments` segments (0 = all)."""
    return float(features.norm_stats(max_segments, seed)[0])


class LevelMatched:
    """A noise corpus whose log-mel is read shifted by `shift` (= main level - noise level).

    Shifting the log-mel by `s` multiplies the noise power by `exp(s)`; `MelCrops` reads a noise
    corpus only through `len`, `length` and `segment`, so this wrapper is all it needs.
    """

    def __init__(self, features: MelFeatures, shift: float):
        if not math.isfinite(shift):
            raise ValueError(f"noise level shift must be finite, got {shift}")
        self.features = features
        self.shift = float(shift)
        self.index = features.index

    def __len__(self) -> int:
        return len(self.features)

    def length(self, i: int) -> int:
        return self.features.length(i)

    def segment(self, i: int) -> Tensor:
        """`[n_mels, frames]` float32 log-mel of noise segment `i`, shifted to the main corpus's level."""
        return self.features.segment(i).float() + self.shift


@torch.no_grad()
def teacher_frame_stats(teacher_frames, data: MelCrops, clips: int, micro_batch: int = 32) -> tuple[Tensor, Tensor]:
    """Per-dimension (mean, std) of `teacher_frames(clean mel)` over `clips` training crops.

    `teacher_frames` maps a clean normalised batch `[B, 1, F, T]` to frames `[B, T', E]`
    (`M2DX.teacher_frames`). The crops are those of the first `ceil(clips / micro_batch)` slots of
    `data` (pure functions of the slot, so every rank and every resume computes the same numbers).
    """
    if clips < 2:
        raise ValueError(f"need at least 2 clips for target statistics, got {clips}")
    b = min(micro_batch, clips)
    total, sq, n = None, None, 0
    for step in range(math.ceil(clips / b)):
        mel = data.get(Slot(step, 0, b, 1))["mel"]
        x = teacher_frames(mel).flatten(0, 1).double()
        total = x.sum(0) if total is None else total + x.sum(0)
        sq = (x * x).sum(0) if sq is None else sq + (x * x).sum(0)
        n += x.shape[0]
    mean = total / n
    var = (sq / n - mean * mean).clamp_min(0.0) * n / max(n - 1, 1)
    return mean.float(), var.sqrt().clamp_min(1e-6).float()
