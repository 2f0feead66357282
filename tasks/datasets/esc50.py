"""ESC-50 loader: `ESC-50-master/meta/esc50.csv` + `audio/*.wav`, for the mini set and the real corpus.

The real release (Piczak 2015) has 2000 five-second clips at 44.1 kHz in 50 classes, pre-arranged in
5 folds so that clips from one source recording never straddle folds; the protocol is 5-fold
cross-validation (train on four folds, test on the fifth, average). The mini-benchmark writes the
same layout with fewer classes, so nothing here depends on the class count.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..audio import AudioReadError
from ..data.build import DatasetError
from .base import AudioExample
from .layout import ExampleList, check_audio, find_top, skip_reason

__all__ = ["COLUMNS", "FOLDS", "load_esc50", "read_metadata", "fold_split"]

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
FOLDS = (1, 2, 3, 4, 5)
CLIP_SECONDS = 5.0


def _is_top(p: Path) -> bool:
    return (p / "meta" / "esc50.csv").is_file()


def _targets() -> dict[str, int]:
    from ..data.sound_sources import ESC50_TARGETS  # the real release's category -> target table

    return ESC50_TARGETS


def read_metadata(meta: Path) -> list[tuple[int, dict]]:
    """`(line number, row)` of every clip in `meta/esc50.csv`, checked for meaning as well as form.

    Each row must have every column, a fold in 1-5, an integer target, a category of the real
    ESC-50 with that category's own target (a mismatch would list one class twice), and a file
    name not listed before. Anything else raises `DatasetError` naming the CSV line.
    """
    try:
        text = meta.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{meta}: not a text CSV file ({exc.reason} at byte {exc.start}); restore the "
                           f"ESC-50 metadata file meta/esc50.csv") from None
    if "\x00" in text:
        raise DatasetError(f"{meta}: not a text CSV file (it contains NUL bytes); restore the ESC-50 metadata "
                           f"file meta/esc50.csv")
    if not text.strip():
        raise DatasetError(f"{meta}: empty; expected the header {','.join(COLUMNS)} and one row per clip")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
        rows = [(reader.line_num, r) for r in reader]
    except csv.Error as exc:
        raise DatasetError(f"{meta}:{reader.line_num}: not valid CSV ({exc})") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{meta}:1: header lacks column(s) {', '.join(missing)} (expected {','.join(COLUMNS)}); "
                           f"is this an ESC-50 metadata file?")
    targets = _targets()
    out, seen = [], {}
    for line, values in rows:
        if not any(v.strip() for v in values):
            continue  # a blank line
        where = f"{meta}:{line}"
        if len(values) != len(header):
            raise DatasetError(f"{where}: {len(values)} field(s), the header has {len(header)} ({','.join(header)})")
        row = {h: v.strip() for h, v in zip(header, values)}
        name = row["filename"]
        if not name.endswith(".wav") or "/" in name or "\\" in name:
            raise DatasetError(f"{where}: filename {name!r} is not a clip file name such as 1-100032-A-0.wav")
        try:
            fold = int(row["fold"])
        except ValueError:
            raise DatasetError(f"{where}: fold {row['fold']!r} is not a whole number 1-5") from None
        if fold not in FOLDS:
            raise DatasetError(f"{where}: fold {fold} is outside 1-5 (ESC-50 has five folds)")
        try:
            target = int(row["target"])
        except ValueError:
            raise DatasetError(f"{where}: target {row['target']!r} is not a whole number 0-49") from None
        category = row["category"]
        if category not in targets:
            raise DatasetError(f"{where}: unknown class {category!r} (not one of the 50 ESC-50 categories)")
        if targets[category] != target:
            raise DatasetError(f"{where}: target {target} does not match category {category!r} (ESC-50 target "
                               f"{targets[category]}); a mismatch would list one class twice")
        if name in seen:
            raise DatasetError(f"{where}: {name} is listed twice (first on line {seen[name]})")
        seen[name] = line
        out.append((line, {**row, "fold": fold, "target": target}))
    if not out:
        raise DatasetError(f"{meta}: lists no clips (only a header)")
    return out


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
    Missing, empty, truncated or non-finite audio raises `AudioReadError` naming the file unless
    `skip_bad`; a metadata row that is malformed or means something impossible raises `DatasetError`
    naming its line (never skipped).
    """
    top = find_top("esc50", path, profile, root, _is_top, ("ESC-50-master",))
    meta = top / "meta" / "esc50.csv"
    rows = read_metadata(meta)
    out = ExampleList()
    out.sources.append(meta)
    for _line, row in rows:
        fold = row["fold"]
        if folds is not None and fold not in folds:
            continue
        wav = top / "audio" / row["filename"]
        try:
            # real clips are exactly 5 s; allow a little slack for re-encoded copies
            check_audio(wav, min_seconds=CLIP_SECONDS - 0.1)
        except AudioReadError as exc:
            if not skip_bad:
                raise
            out.skipped[str(wav)] = skip_reason(wav, exc)
            continue
        out.append(
            AudioExample(
                key=Path(row["filename"]).stem,
                path=wav,
                label=row["category"],
                meta={
                    "fold": fold,
                    "target": row["target"],
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
