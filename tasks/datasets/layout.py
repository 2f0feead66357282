"""Finding a dataset on disk and scanning it: shared by the ESC-50, ICBHI and pretraining loaders.

A loader is given either nothing (use the built mini-benchmark of a profile), the corpus' native
top folder (`ESC-50-master`, `ICBHI_final_database`) or the folder containing it, which is how
people unpack the real corpora. When nothing is found the error says the two ways out.
Scanning loaders check every file's header up front, so a broken file fails before hours of
embedding instead of in the middle; `skip_bad=True` skips such files and records them in
`ExampleList.skipped` (the list type shared with the speech loaders, `tasks.datasets._common`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..audio import MISSING_REMEDY, REMEDY, AudioReadError, audio_info
from ..data.build import DatasetNotBuiltError, dataset_dir
from ._common import ExampleList, check_readable, skip_reason

__all__ = ["ExampleList", "find_top", "check_audio", "skip_reason"]


def find_top(
    name: str,
    path: str | os.PathLike | None,
    profile: str,
    root: str | os.PathLike | None,
    is_top: Callable[[Path], bool],
    top_names: tuple[str, ...],
) -> Path:
    """The corpus' native top folder, from `path` (the top folder or its parent) or the built profile."""
    base = Path(path).expanduser() if path is not None else dataset_dir(name, profile, root)
    candidates = [base] + [base / n for n in top_names]
    for c in candidates:
        if c.is_dir() and is_top(c):
            return c
    if path is None:
        raise DatasetNotBuiltError(
            f"dataset '{name}' is not built for profile '{profile}' (looked in {base}): run "
            f"`bench data build --profile {profile} --only {name}` or pass `--dataset PATH`"
        )
    raise DatasetNotBuiltError(
        f"{base} does not hold a {name} corpus (expected {' or '.join(top_names)} there or in it): pass the "
        f"folder that contains it with `--dataset PATH`, or run `bench data build --only {name}`"
    )


def check_audio(path: Path, min_seconds: float = 0.0) -> float:
    """Duration of `path` from its header; `AudioReadError` naming the file and what to do if it is
    missing, empty, corrupt, too short or holds NaN/infinite samples."""
    if not path.exists():
        raise AudioReadError(f"{path}: file not found; {MISSING_REMEDY}")
    problem = check_readable(path)
    if problem:
        raise AudioReadError(f"{path}: {problem}; {REMEDY}")
    info = audio_info(path)
    duration = info.frames / info.samplerate
    if duration < min_seconds:
        raise AudioReadError(f"{path}: truncated ({duration:.2f} s, expected at least {min_seconds:.2f} s); {REMEDY}")
    return duration
