"""Training checkpoints: one atomic file holding everything needed to continue exactly.

A checkpoint is a plain dict (readable with `torch.load(weights_only=True)`):

- the weight-bundle keys of the method (`encoder_config`, `frontend_config`, `norm_stats`, `encoder`
  for M2D), so the file is directly an upstream checkpoint;
- `method`, `config` (the full run config as a nested dict), `step` (optimiser steps done),
  `total_steps`;
- `model` (every module state incl. EMA target and step counters), `optimizer`, `scheduler`
  (the schedule is a pure function of the step; its parameters are recorded), `rng` (torch CPU,
  CUDA and Python `random` states of rank 0), `data` (the sampler position), `world_size`;
- under DDP also `rng_ranks` (every rank's RNG states, gathered when the checkpoint is written), so
  a run resumed with the same number of processes continues every rank's stream.

Data order, crops and masks are drawn from generators seeded by (seed, step, micro-batch), so the
step alone restores them; the global RNG states are saved for anything else that draws from them.
NumPy's global RNG is not used by the training code and is not saved.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ..checkpoints import read_checkpoint
from ..fileio import atomic_path

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "restore_rng"]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write `state` atomically: a kill leaves the previous checkpoint or the new one, never half a file."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    return read_checkpoint(path)
