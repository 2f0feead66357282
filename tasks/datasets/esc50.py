"""ESC-50 loader: `ESC-50-master/meta/esc50.csv` + `audio/*.wav`, for the mini set and the real corpus.

The real release (Piczak 2015) has 2000 five-second clips at 44.1 kHz in 50 classes, pre-arranged in
5 folds so that clips from one source recording never straddle folds; the protocol is 5-fold
cross-validation (train on four folds, test on the fifth, average). The mini-benchmark writes the
same layout with fewer classes, so nothing here depends on the class count.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..audio import AudioReadError
from .base import AudioExample
from .layout import ExampleList, check_audio, find_top

__all__ = ["COLUMNS", "load_esc50", "fold_split"]

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
CLIP_SECONDS = 5.0


def _is_top(p: Path) -> bool:
    return (p / "meta" / "esc50.csv").is_file()


def load_esc50(
    path: str | os.PathLike | None = None,
    *,
    profile: str = "mini",
    root: str | os.PathLike | None = None,
    folds: tuple[int, ...] | None = None,
    skip_bad: bool = False,
) -> ExampleList:
    """Every clip (or those of `folds`) as `AudioExample(label=category, meta={fold, target, src_file, take, esc10})`.

    `path` is `ESC-50-master` or the folder containing it; default: the built benchmark of `profile`.
    Missing, empty or truncated audio raises `AudioReadError` naming the file unless `skip_bad`.
    """
    top = find_top("esc50", path, profile, root, _is_top, ("ESC-50-master",))
    meta = top / "meta" / "esc50.csv"
    with open(meta, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{meta}: missing column(s) {', '.join(missing)}; is this an ESC-50 metadata file?")
        rows = list(reader)
    out = ExampleList()
    for row in rows:
        fold = int(row["fold"])
        if folds is not None and fold not in folds:
            continue
        wav = top / "audio" / row["filename"]
        try:
            # real clips are exactly 5 s; allow a little slack for re-encoded copies
            check_audio(wav, min_seconds=CLIP_SECONDS - 0.1)
        except AudioReadError as exc:
            if not skip_bad:
                raise
            out.skipped[str(wav)] = str(exc)
            continue
        out.append(
            AudioExample(
                key=Path(row["filename"]).stem,
                path=wav,
                label=row["category"],
                meta={
                    "fold": fold,
                    "target": int(row["target"]),
                    "src_file": row["src_file"],
                    "take": row["take"],
                    "esc10": row["esc10"] == "True",
                },
            )
        )
    return out


def fold_split(examples: list[AudioExample], test_fold: int) -> tuple[list[AudioExample], list[AudioExample]]:
    """(train, test) for one cross-validation round: test = `test_fold`, train = the other folds."""
    train = [e for e in examples if e.meta["fold"] != test_fold]
    test = [e for e in examples if e.meta["fold"] == test_fold]
    return train, test
