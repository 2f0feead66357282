"""The pretraining corpus: index CSV files written by `bench data build`, read without importing `tasks`.

Layout: `<data root>/<profile>/pretrain/{general,respiratory,noise}/index.csv`, header
`path,start,stop,label,source`. `path` is relative to the index file's directory, `start`/`stop`
are seconds (empty = the whole file), `label` is empty for unlabelled audio (several labels are
separated by `;`), `source` names where the audio came from. The data root is `$BENCH_DATA`, else
the user cache directory (the same rule as `tasks.data.paths`, restated here because `upstreams`
must not import `tasks`).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import soundfile as sf
import torch
import torchaudio
from torch import Tensor

from .config import ConfigError

__all__ = ["Segment", "INDEX_COLUMNS", "data_root", "default_index", "read_index", "read_segment", "split_labels"]

INDEX_COLUMNS = ("path", "start", "stop", "label", "source")
CORPORA = ("general", "respiratory", "noise")


@dataclass(frozen=True)
class Segment:
    path: Path  # absolute
    start: float  # seconds
    stop: float | None  # seconds; None = end of file
    label: str  # "" = unlabelled
    source: str


def data_root() -> Path:
    env = os.environ.get("BENCH_DATA")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("audio-repr-bench")) / "data"


def default_index(corpus: str = "general", profile: str = "mini") -> Path:
    if corpus not in CORPORA:
        raise ConfigError(f"unknown pretraining corpus {corpus!r}; choose one of {', '.join(CORPORA)}")
    return data_root() / profile / "pretrain" / corpus / "index.csv"


def split_labels(label: str) -> list[str]:
    return [x.strip() for x in label.split(";") if x.strip()]


def _seconds(raw: str, column: str, where: str) -> float | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{where}: {column} {raw!r} is not a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{where}: {column} {value} is negative")
    return value


def read_index(path: str | Path) -> list[Segment]:
    """Every row of an index CSV as a `Segment`; errors name the file and line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"pretraining corpus index not found: {path}; build it with `bench data build --profile mini` "
            f"(data root: $BENCH_DATA or the user cache dir) or pass --index / data.index"
        )
    base = path.parent
    segments = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in INDEX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{path}: header lacks column(s) {', '.join(missing)}; expected {','.join(INDEX_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            if not row["path"]:
                raise ConfigError(f"{where}: empty path")
            start = _seconds(row["start"], "start", where) or 0.0
            stop = _seconds(row["stop"], "stop", where)
            if stop is not None and stop <= start:
                raise ConfigError(f"{where}: stop {stop} is not after start {start}")
            segments.append(Segment(base / row["path"], start, stop, (row["label"] or "").strip(), row["source"] or ""))
    if not segments:
        raise ConfigError(f"{path} lists no audio")
    return segments


def read_segment(seg: Segment, sample_rate: int, where: str) -> Tensor:
    """Mono float32 audio of one index row at `sample_rate`; errors name `where` and the file."""
    try:
        info = sf.info(str(seg.path))
        start = int(round(seg.start * info.samplerate))
        stop = None if seg.stop is None else int(round(seg.stop * info.samplerate))
        wav, sr = sf.read(str(seg.path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ConfigError(f"{where}: cannot read {seg.path}: {exc}") from exc
    wav = torch.from_numpy(wav).mean(dim=1)
    if sr != sample_rate:
        wav = torchaudio.functional.resample(wav, sr, sample_rate)
    if wav.numel() == 0:
        raise ConfigError(f"{where}: {seg.path} [{seg.start}, {seg.stop}] holds no samples")
    return wav
