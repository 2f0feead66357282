"""Loading weights safely and explaining mismatches.

Checkpoints are read with `torch.load(weights_only=True)`: a pickle that would construct arbitrary
Python objects (and so could run code) is refused. Mismatched state dicts are reported key by key
so a user can see whether they passed an M2D-S 16x4 checkpoint to a 16x16 model, for example.

A `.safetensors` file (written by `bench export`) holds only the encoder's tensors; the bundle's
configs travel as JSON strings in its metadata (`SAFETENSORS_METADATA`), and `read_checkpoint`
rebuilds the same plain-dict bundle from both.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError
from .fileio import sha256_file

__all__ = ["read_checkpoint", "write_safetensors", "load_state_strict", "describe_mismatch"]

# bundle entries stored as JSON strings in the safetensors metadata (source_sha256: the exported checkpoint)
SAFETENSORS_METADATA = ("encoder_config", "frontend_config", "norm_stats", "method", "source_sha256")
_REQUIRED_METADATA = ("encoder_config", "frontend_config", "norm_stats")


def write_safetensors(bundle: dict, out: str | Path, source_sha256: str | None = None) -> Path:
    """The bundle's `encoder` state as safetensors, its configs as JSON metadata (written atomically)."""
    from safetensors.torch import save_file

    from .fileio import atomic_path

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in bundle["encoder"].items()}
    values = {**bundle, "source_sha256": source_sha256}
    metadata = {k: json.dumps(values.get(k)) for k in SAFETENSORS_METADATA}
    with atomic_path(out, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(out)


def _read_safetensors(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            encoder = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # SafetensorError on a bad header, OSError/ValueError on a cut file
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            f"re-export it with `bench export CKPT {path.name}`"
        ) from None
    missing = [k for k in _REQUIRED_METADATA if k not in metadata]
    if missing:
        raise CheckpointError(
            f"{path}: safetensors file without the bundle metadata ({', '.join(missing)} missing); "
            f"only files written by `bench export CKPT OUT.safetensors` load as upstreams"
        )
    try:
        bundle = {k: json.loads(metadata[k]) for k in SAFETENSORS_METADATA if k in metadata}
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: safetensors metadata is not valid JSON ({exc}); re-export it") from None
    return {**{k: v for k, v in bundle.items() if v is not None}, "encoder": encoder}



def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
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
