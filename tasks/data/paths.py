"""Where datasets live: `--root`, else `$BENCH_DATA`, else the user's cache directory."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["data_root", "profile_root", "sources_cache"]


def data_root(root: str | os.PathLike | None = None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("BENCH_DATA")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("audio-repr-bench")) / "data"


def profile_root(profile: str, root: str | os.PathLike | None = None) -> Path:
    return data_root(root) / profile


def sources_cache(root: str | os.PathLike | None = None) -> Path:
    """Downloaded .deb files and their extracted trees, shared by every profile."""
    return data_root(root) / "_sources"
