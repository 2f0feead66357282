"""Malformed copies of the tiny datasets: copy one, apply one named corruption (for bad-input tests).

    bad = corrupt(tiny_root, tmp_path, "esc50", "nan_clip")
    bad.dataset              # the folder to pass as --dataset
    bad.file, bad.line       # the file the one error line (or the skipped entry) must name, and the line number
    bad.task, bad.protocol   # a task and protocol that read this dataset

By default the copy loses its MANIFEST.json / BUILD_INFO.json, so it is a real corpus and each
corruption reaches the loaders' own checks; `keep_manifest=True` keeps them (the built-dataset case,
where the manifest's per-file sha256 are checked too). `profile=True` lays the copy out as a built
`tiny` profile (`<tmp>/data/tiny/<dataset>`, manifest kept) and `bad.where` becomes
`--profile tiny --data-root <tmp>/data`: a run then gets the tiny training budget instead of a real
corpus's (LibriSpeech's would take many minutes). `CORRUPTIONS[dataset]` lists every name.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

TASKS = {  # dataset -> (task, protocol) that reads it
    "esc50": ("esc50", "linear"),
    "icbhi": ("icbhi", "linear"),
    "speech_commands": ("speech_commands", "linear"),
    "librispeech": ("pr", "linear"),
    "quesst14": ("qbe", "dtw"),
}
TOPS = {"esc50": "ESC-50-master", "icbhi": "ICBHI_final_database", "speech_commands": "speech_commands_v0.02",
        "librispeech": "LibriSpeech", "quesst14": "quesst14Database"}


@dataclass
class Corrupted:
    dataset: Path
    file: Path
    line: int | None
    task: str
    protocol: str
    profile_root: Path | None = None  # set when laid out as a built tiny profile

    @property
    def where(self) -> list[str]:
        """`bench run` arguments that point at the copy."""
        if self.profile_root is not None:
            return ["--profile", "tiny", "--data-root", str(self.profile_root)]
        return ["--dataset", str(self.dataset)]

    @property
    def needle(self) -> str:
        """What the error line must contain: `name:line` for a bad line, the file name otherwise."""
        return f"{self.file.name}:{self.line}" if self.line else self.file.name


# -- audio edits ---------------------------------------------------------------------------------

def fill_non_finite(path: Path, value: float = np.nan) -> None:
    """Rewrite `path` as a float WAV of the same length whose every sample is `value`."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    data[:] = value
    sf.write(str(path), data, sr, subtype="FLOAT", format="WAV")


def truncate(path: Path, keep: float = 1 / 3) -> None:
    path.write_bytes(path.read_bytes()[: max(30, int(path.stat().st_size * keep))])


def replace_same_size(path: Path) -> None:
    """Reverse the samples of a PCM WAV in place: valid audio, other content, same size and mtime."""
    st = path.stat()
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data")
    size = int.from_bytes(raw[at + 4 : at + 8], "little")
    samples = np.frombuffer(bytes(raw[at + 8 : at + 8 + size]), dtype="<i2")
    raw[at + 8 : at + 8 + size] = samples[::-1].tobytes()
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def _append_line(path: Path, text: str) -> int:
    lines = path.read_text().splitlines()
    lines.append(text)
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


# -- ESC-50 ------------------------------------------------------------------------------------

def _esc_csv(d: Path) -> Path:
    return d / "ESC-50-master" / "meta" / "esc50.csv"


def _esc_clip(d: Path, i: int = 3) -> Path:
    return sorted((d / "ESC-50-master" / "audio").glob("*.wav"))[i]


def _edit_row(column: str, value: str, line: int = 6) -> Callable[[Path], tuple[Path, int]]:
    def edit(d: Path) -> tuple[Path, int]:
        csv = _esc_csv(d)
        lines = csv.read_text().splitlines()
        header = lines[0].split(",")
        cells = lines[line - 1].split(",")
        cells[header.index(column)] = value
        lines[line - 1] = ",".join(cells)
        csv.write_text("\n".join(lines) + "\n")
        return csv, line

    return edit


def _esc_target_mismatch(d: Path) -> tuple[Path, int]:
    csv = _esc_csv(d)
    lines = csv.read_text().splitlines()
    cells = lines[5].split(",")
    cells[2] = str((int(cells[2]) + 1) % 50)  # the category stays: its target is now another class's
    lines[5] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    return csv, 6


def _esc_duplicate(d: Path) -> tuple[Path, int]:
    csv = _esc_csv(d)
    return csv, _append_line(csv, csv.read_text().splitlines()[5])


def _esc_short_row(d: Path) -> tuple[Path, int]:
    csv = _esc_csv(d)
    lines = csv.read_text().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:4])
    csv.write_text("\n".join(lines) + "\n")
    return csv, 6


def _esc_header(d: Path) -> tuple[Path, int]:
    csv = _esc_csv(d)
    lines = csv.read_text().splitlines()
    lines[0] = lines[0].replace("category", "class")
    csv.write_text("\n".join(lines) + "\n")
    return csv, 1


def _esc_empty(d: Path) -> tuple[Path, None]:
    _esc_csv(d).write_bytes(b"")
    return _esc_csv(d), None


def _esc_binary(d: Path) -> tuple[Path, None]:
    _esc_csv(d).write_bytes(bytes(range(256)) * 8)
    return _esc_csv(d), None


def _esc_too_few_folds(d: Path) -> tuple[Path, None]:
    """Truncate every clip of folds 3-5: with --skip-bad two folds are left."""
    for wav in (d / "ESC-50-master" / "audio").glob("*.wav"):
        if wav.name.split("-")[0] in ("3", "4", "5"):
            truncate(wav)
    return _esc_csv(d), None


def _audio(fn, pick) -> Callable[[Path], tuple[Path, None]]:
    def edit(d: Path) -> tuple[Path, None]:
        f = pick(d)
        fn(f)
        return f, None

    return edit


ESC50 = {
    "nan_clip": _audio(fill_non_finite, _esc_clip),
    "inf_clip": _audio(lambda p: fill_non_finite(p, np.inf), _esc_clip),
    "truncated_clip": _audio(truncate, _esc_clip),
    "same_size_clip": _audio(replace_same_size, _esc_clip),
    "csv_unknown_class": _edit_row("category", "unicorn"),
    "csv_target_mismatch": _esc_target_mismatch,
    "csv_fold_9": _edit_row("fold", "9"),
    "csv_duplicate_row": _esc_duplicate,
    "csv_text_fold": _edit_row("fold", "one"),
    "csv_text_target": _edit_row("target", "dog"),
    "csv_short_row": _esc_short_row,
    "csv_wrong_header": _esc_header,
    "csv_empty": _esc_empty,
    "csv_binary": _esc_binary,
    "too_few_folds": _esc_too_few_folds,
}


# -- ICBHI ----------------------------------------------------------------------------------

def _icbhi_db(d: Path) -> Path:
    return d / "ICBHI_final_database"


def _icbhi_rec(d: Path, i: int = 2) -> str:
    return sorted(p.stem for p in _icbhi_db(d).glob("*.wav"))[i]


def _icbhi_missing_txt(d: Path) -> tuple[Path, None]:
    stem = _icbhi_rec(d)
    (_icbhi_db(d) / f"{stem}.txt").unlink()
    return _icbhi_db(d) / f"{stem}.txt", None


def _icbhi_bad_annotation(d: Path) -> tuple[Path, int]:
    txt = _icbhi_db(d) / f"{_icbhi_rec(d)}.txt"
    return txt, _append_line(txt, "1.5\tabc\t0")


def _icbhi_bad_split(d: Path) -> tuple[Path, int]:
    split = d / "ICBHI_challenge_train_test.txt"
    return split, _append_line(split, "101_1b1_Ll_sc_LittC2SE validation")


ICBHI = {
    "missing_txt": _icbhi_missing_txt,
    "bad_annotation_line": _icbhi_bad_annotation,
    "bad_split_line": _icbhi_bad_split,
    "nan_recording": _audio(fill_non_finite, lambda d: _icbhi_db(d) / f"{_icbhi_rec(d)}.wav"),
}


# -- Speech Commands ------------------------------------------------------------------------------

def _sc_root(d: Path) -> Path:
    return d / "speech_commands_v0.02"


def _sc_bad_list_line(d: Path) -> tuple[Path, int]:
    lst = _sc_root(d) / "validation_list.txt"
    return lst, _append_line(lst, "this line is not a clip path")


def _sc_listed_missing(d: Path) -> tuple[Path, None]:
    _append_line(_sc_root(d) / "testing_list.txt", "yes/00000000_nohash_9.wav")
    return _sc_root(d) / "yes" / "00000000_nohash_9.wav", None


def _sc_clip(d: Path) -> Path:
    root = _sc_root(d)
    listed = set((root / "validation_list.txt").read_text().split()) | set((root / "testing_list.txt").read_text().split())
    return next(p for p in sorted((root / "yes").glob("*.wav")) if f"yes/{p.name}" not in listed)  # a training clip


SPEECH_COMMANDS = {
    "bad_list_line": _sc_bad_list_line,
    "listed_file_missing": _sc_listed_missing,
    "nan_clip": _audio(fill_non_finite, _sc_clip),
    "truncated_clip": _audio(lambda p: truncate(p, 0.0), _sc_clip),
}


# -- LibriSpeech ------------------------------------------------------------------------------

def _ls_trans(d: Path, split: str = "dev-clean") -> Path:
    return sorted((d / "LibriSpeech" / split).glob("*/*/*.trans.txt"))[0]


def _ls_transcript_without_audio(d: Path) -> tuple[Path, None]:
    trans = _ls_trans(d)
    uid = trans.read_text().split()[0]
    audio = trans.parent / f"{uid}.flac"
    audio.unlink()
    return audio, None


def _ls_bad_transcript_line(d: Path) -> tuple[Path, int]:
    trans = _ls_trans(d)
    return trans, _append_line(trans, "GARBAGE WITHOUT AN UTTERANCE ID")


LIBRISPEECH = {
    "transcript_without_audio": _ls_transcript_without_audio,
    "bad_transcript_line": _ls_bad_transcript_line,
}


# -- QUESST 2014 --------------------------------------------------------------------------------

def _q_missing_query(d: Path) -> tuple[Path, None]:
    wav = sorted((d / "quesst14Database" / "dev_queries").glob("*.wav"))[1]
    wav.unlink()
    return wav, None


def _q_bad_key_line(d: Path) -> tuple[Path, int]:
    lst = d / "quesst14Database" / "scoring" / "language_key_dev.lst"
    return lst, _append_line(lst, "one two three")


QUESST14 = {
    "listed_query_missing": _q_missing_query,
    "bad_language_key_line": _q_bad_key_line,
}

CORRUPTIONS: dict[str, dict[str, Callable]] = {
    "esc50": ESC50, "icbhi": ICBHI, "speech_commands": SPEECH_COMMANDS, "librispeech": LIBRISPEECH, "quesst14": QUESST14,
}


def copy_dataset(tiny_root: Path, tmp: Path, dataset: str, *, keep_manifest: bool = False,
                 profile: bool = False) -> Path:
    """A private copy of the built tiny `dataset` (a real corpus unless `keep_manifest` or `profile`)."""
    dest = Path(tmp) / ("data/tiny" if profile else "") / (dataset if profile else f"{dataset}-copy")
    keep_manifest = keep_manifest or profile
    shutil.copytree(Path(tiny_root) / "tiny" / dataset, dest)
    if not keep_manifest:
        for name in ("MANIFEST.json", "BUILD_INFO.json"):
            (dest / name).unlink(missing_ok=True)
    return dest


def corrupt(tiny_root: Path, tmp: Path, dataset: str, corruption: str, *, keep_manifest: bool = False,
            profile: bool = False) -> Corrupted:
    """Copy the tiny `dataset` into `tmp` and apply `corruption` (a name in `CORRUPTIONS[dataset]`)."""
    edit = CORRUPTIONS[dataset][corruption]
    dest = copy_dataset(tiny_root, tmp, dataset, keep_manifest=keep_manifest, profile=profile)
    file, line = edit(dest)
    task, protocol = TASKS[dataset]
    return Corrupted(dest, file, line, task, protocol, Path(tmp) / "data" if profile else None)
