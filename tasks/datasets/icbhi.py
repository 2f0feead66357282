"""ICBHI 2017 loader: one `AudioExample` per annotated respiratory cycle, for the mini set and the real database.

Real layout: `ICBHI_final_database/` holds `<PPP>_<RRR>_<Loc>_<Mode>_<Device>.wav` + `.txt` (some
copies nest them in `audio_and_txt_files/`); the official split `ICBHI_challenge_train_test.txt`
(`<recording><TAB>train|test`) is distributed separately and usually placed inside or beside that
folder, sometimes spelled `ICBHI_Challenge_train_test.txt`. Each annotation line is
`onset offset crackles wheezes`; the four-way label is normal / crackle / wheeze / both.

Real-set quirks handled here: mixed sample rates (4, 10 and 44.1 kHz; resampling happens later in
`tasks.audio.read_audio`); cycles whose offset runs past the end of the audio are clipped to the
file end (and dropped when less than 50 ms remains); blank lines and trailing whitespace in the
annotation files; recordings missing from the split file raise (or are skipped with `skip_bad`).
The official split is patient-wise but not perfectly patient-disjoint; it is followed as given.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..audio import MISSING_REMEDY, AudioReadError, audio_info
from ..data.build import DatasetError
from .base import AudioExample
from .layout import ExampleList, check_audio, find_top, skip_reason

__all__ = ["LABELS", "NAME_RE", "load_icbhi", "cycle_label", "find_split_file", "read_annotations"]

LABELS = ("normal", "crackle", "wheeze", "both")
NAME_RE = re.compile(r"^(?P<patient>\d{3})_(?P<rec>[0-9A-Za-z]+)_(?P<loc>[A-Za-z]{2})_(?P<mode>sc|mc)_(?P<device>[A-Za-z0-9]+)$")
MIN_CYCLE = 0.05
SPLIT_NAME = "icbhi_challenge_train_test.txt"


def cycle_label(crackles: int, wheezes: int) -> str:
    return LABELS[(1 if crackles else 0) + (2 if wheezes else 0)]


def _audio_dir(top: Path) -> Path:
    nested = top / "audio_and_txt_files"
    return nested if nested.is_dir() else top


def _is_top(p: Path) -> bool:
    d = _audio_dir(p)
    return any(NAME_RE.match(f.stem) for f in d.glob("*.txt"))


def find_split_file(top: Path) -> Path | None:
    """The official split file inside the database folder or beside it (any capitalisation)."""
    for d in (top, top.parent, _audio_dir(top)):
        for f in sorted(d.glob("*.txt")) if d.is_dir() else []:
            if f.name.lower() == SPLIT_NAME:
                return f
    return None


def read_annotations(txt: Path) -> list[tuple[float, float, int, int]]:
    """`(onset, offset, crackles, wheezes)` per line; a malformed line raises `DatasetError` naming the file and line."""
    out = []
    try:
        text = txt.read_text()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{txt}: not a text annotation file ({exc.reason}); restore it, or pass --skip-bad") from None
    for no, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 4:
                raise ValueError
            a, b, c, w = float(parts[0]), float(parts[1]), int(parts[2]), int(parts[3])
            if not (a >= 0 and b >= 0) or c not in (0, 1) or w not in (0, 1):
                raise ValueError
        except ValueError:
            raise DatasetError(f"{txt}:{no}: expected 'onset offset crackles wheezes' (seconds, "
                               f"flags 0/1), got {line.strip()!r}; fix the line, or pass --skip-bad to leave the "
                               f"recording out") from None
        out.append((a, b, c, w))
    return out


def load_icbhi(
    path: str | os.PathLike | None = None,
    *,
    profile: str = "mini",
    root: str | os.PathLike | None = None,
    split: str | None = None,
    skip_bad: bool = False,
) -> ExampleList:
    """Respiratory cycles (optionally of one official `split`, 'train' or 'test').

    `path` is `ICBHI_final_database` or the folder containing it; default: the built benchmark of
    `profile`. Each example has `start`/`stop` in seconds, `label` in LABELS and `meta` with patient,
    recording, location, mode, device, sample_rate, cycle index and split.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, not {split!r}")
    top = find_top("icbhi", path, profile, root, _is_top, ("ICBHI_final_database",))
    split_file = find_split_file(top)
    if split_file is None:
        raise FileNotFoundError(
            f"no ICBHI_challenge_train_test.txt in {top} or {top.parent}: download the official split file and "
            f"put it beside the database folder"
        )
    official: dict[str, str] = {}
    for no, line in enumerate(split_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("train", "test"):
            raise DatasetError(f"{split_file}:{no}: expected '<recording> train|test', got {line.strip()!r}")
        if parts[0] in official:
            raise DatasetError(f"{split_file}:{no}: recording {parts[0]} is listed twice")
        official[parts[0]] = parts[1]

    out = ExampleList()
    out.sources.append(split_file)
    audio_dir = _audio_dir(top)
    stems = sorted({f.stem for pattern in ("*.txt", "*.wav") for f in audio_dir.glob(pattern) if NAME_RE.match(f.stem)})
    for stem in stems:  # README, diagnosis and split files do not match NAME_RE
        m = NAME_RE.match(stem)
        txt, wav = audio_dir / f"{stem}.txt", audio_dir / f"{stem}.wav"
        try:
            if not txt.is_file():
                raise AudioReadError(f"{wav}: its annotation file {txt.name} is missing; {MISSING_REMEDY}")
            if stem not in official:
                raise DatasetError(f"{wav}: recording {stem} is not listed in {split_file}; add it there, or pass "
                                   f"--skip-bad to leave it out")
            duration = check_audio(wav)
            sr = audio_info(wav).samplerate
            cycles = read_annotations(txt)
        except (AudioReadError, DatasetError) as exc:
            if not skip_bad:
                raise
            out.skipped[str(wav)] = skip_reason(wav, exc)
            continue
        out.sources.append(txt)
        rec_split = official[stem]
        if split is not None and rec_split != split:
            continue
        for i, (a, b, c, w) in enumerate(cycles):
            b = min(b, duration)  # real annotations sometimes run past the end of the file
            if b - a < MIN_CYCLE:
                continue
            out.append(
                AudioExample(
                    key=f"{stem}#{i}",
                    path=wav,
                    start=a,
                    stop=b,
                    label=cycle_label(c, w),
                    meta={
                        "patient": m["patient"],
                        "recording": stem,
                        "location": m["loc"],
                        "mode": m["mode"],
                        "device": m["device"],
                        "sample_rate": sr,
                        "cycle": i,
                        "split": rec_split,
                    },
                )
            )
    return out
