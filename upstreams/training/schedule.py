"""Learning-rate schedule and run length: pure functions of the step, so a resumed run needs no state.

MAE/M2D recipe: linear warm-up to the peak lr (`base_lr * batch / 256`), then half-cosine decay to
`min_lr` at the last step. Lengths may be given in optimiser steps or in epochs of the corpus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import ConfigError, TrainConfig

__all__ = ["RunLength", "run_length", "warmup_cosine_lr"]


@dataclass(frozen=True)
class RunLength:
    total_steps: int
    warmup_steps: int
    steps_per_epoch: float  # optimiser steps per pass over the corpus


def run_length(cfg: TrainConfig, samples_per_epoch: int) -> RunLength:
    """Resolve `steps`/`epochs` and `warmup_steps`/`warmup_epochs` for a corpus of `samples_per_epoch` clips."""
    if samples_per_epoch < 1:
        raise ConfigError("the pretraining corpus is empty: nothing to train on")
    per_epoch = samples_per_epoch / cfg.batch_size
    total = cfg.steps if cfg.steps > 0 else math.ceil(cfg.epochs * per_epoch)
    if total < 1:
        raise ConfigError("set train.steps (optimiser steps) or train.epochs (passes over the corpus) to a positive value")
    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else round(cfg.warmup_epochs * per_epoch)
    if warmup >= total:
        raise ConfigError(f"warm-up of {warmup} steps does not fit in a run of {total} steps; shorten train.warmup_*")
    return RunLength(total, warmup, per_epoch)


def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float = 0.0) -> float:
    """lr for optimiser step `step` (0-based): (step + 1) / warmup * peak during warm-up, then cosine to min_lr."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
