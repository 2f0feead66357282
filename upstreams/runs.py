"""Where pretraining runs live and how an upstream finds the latest one.

Layout: `<runs root>/<method>/<run name>/checkpoint.pt` where the runs root is `$BENCH_RUNS`, else
`./runs` under the current directory. `bench pretrain` writes there by default, and `m2d`, `m2dx`
and `score` load the most recently written `checkpoint.pt` of their method when no `--ckpt` is given.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CheckpointError

__all__ = ["runs_root", "run_checkpoints", "latest_checkpoint", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"


def runs_root() -> Path:
    return Path(os.environ.get("BENCH_RUNS", "runs")).expanduser().resolve()


def run_checkpoints(method: str, root: Path | None = None) -> list[Path]:
    """All checkpoints of `method`, newest first."""
    base = (root or runs_root()) / method
    found = [p for p in base.glob(f"*/{CHECKPOINT_NAME}") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def latest_checkpoint(method: str, root: Path | None = None) -> Path:
    found = run_checkpoints(method, root)
    if not found:
        base = (root or runs_root()) / method
        raise CheckpointError(
            f"no '{method}' checkpoint: pass --ckpt PATH, or pretrain one with `bench pretrain {method} "
            f"--config mini` (runs are looked up in {base}/*/{CHECKPOINT_NAME}; set $BENCH_RUNS to change the root)"
        )
    return found[0]
