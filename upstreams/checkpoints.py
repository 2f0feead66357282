"""Loading weights safely and explaining mismatches.

Checkpoints are read with `torch.load(weights_only=True)`: a pickle that would construct arbitrary
Python objects (and so could run code) is refused. Mismatched state dicts are reported key by key
so a user can see whether they passed an M2D-S 16x4 checkpoint to a 16x16 model, for example.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError
from .fileio import sha256_file

__all__ = ["read_checkpoint", "load_state_strict", "describe_mismatch"]


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # official MAE/M2D training checkpoints store their argparse.Namespace under "args": a plain
        # attribute bag whose contents are unpickled under the same weights_only rules, so allow it
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load - it contains Python objects beyond tensors and plain containers "
            f"(weights_only=True protects against code execution); re-save it as a plain state dict"
        ) from exc
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def describe_mismatch(model: nn.Module, state: dict[str, torch.Tensor], limit: int = 12) -> list[str]:
    """Human-readable differences between a model's state dict and `state` (empty when they fit)."""
    own = model.state_dict()
    problems = []
    for k in sorted(set(own) - set(state)):
        problems.append(f"missing {k} {tuple(own[k].shape)}")
    for k in sorted(set(state) - set(own)):
        problems.append(f"unexpected {k} {tuple(state[k].shape)}")
    for k in sorted(set(own) & set(state)):
        if tuple(own[k].shape) != tuple(state[k].shape):
            problems.append(f"shape {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
    if len(problems) > limit:
        problems = problems[:limit] + [f"... and {len(problems) - limit} more"]
    return problems


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path = "checkpoint") -> None:
    problems = describe_mismatch(model, state)
    if problems:
        raise CheckpointError(
            f"{source} does not fit the {type(model).__name__} architecture: " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)


def file_sha256(path: str | Path | None) -> str | None:
    return None if path is None else sha256_file(path)
