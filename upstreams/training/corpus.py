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

__all__ = ["Segment", "INDEX_COLUMNS", "data_root", "default_index", "read_index", "read_segment", "split_labels",
           "probe_clip_sets", "stratified_pick"]

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


# -- small labelled sets for the pretraining probe --------------------------------------------------
# SUPERB's ten command words (the 12-class view adds _unknown_ and _silence_, which need no probe)
COMMAND_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def stratified_pick(labels: list[str], per_class: int, seed: int) -> list[int]:
    """Indices of up to `per_class` items of every label (a seeded draw), classes with < 2 dropped.

    A class with one item cannot be anyone's leave-one-out neighbour, so it is left out.
    """
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        if lab:
            by_class.setdefault(lab, []).append(i)
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for lab in sorted(by_class):
        items = by_class[lab]
        if len(items) < 2:
            continue
        order = torch.randperm(len(items), generator=gen).tolist()
        picked += sorted(items[j] for j in order[:per_class])
    return picked


def probe_clip_sets(profile: str, per_class: int, seed: int = 0, root: Path | None = None) -> dict[str, list[Segment]]:
    """Labelled clips of the built evaluation sets, read by path (no `tasks` import), for kNN probes.

    - `esc50`: `<root>/<profile>/esc50/ESC-50-master/meta/esc50.csv` (label = category). Every
      ESC-50 clip is test data of one cross-validation fold, so these are used only to *look* at
      the features (no gradient, no model selection), never to train;
    - `speech_commands`: the ten command words of `validation_list.txt` (never the test list).

    Up to `per_class` clips per class (seeded, `stratified_pick`); a set that is not built, or has
    fewer than two classes with two clips, is left out. `{}` when nothing is built.
    """
    base = (root or data_root()) / profile
    sets: dict[str, list[Segment]] = {}
    esc = base / "esc50" / "ESC-50-master"
    if (esc / "meta" / "esc50.csv").is_file():
        with open(esc / "meta" / "esc50.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("filename") and r.get("category")]
        segs = [Segment(esc / "audio" / r["filename"], 0.0, None, r["category"], "esc50") for r in rows]
        sets["esc50"] = [segs[i] for i in stratified_pick([s.label for s in segs], per_class, seed)]
    sc = base / "speech_commands" / "speech_commands_v0.02"
    if (sc / "validation_list.txt").is_file():
        lines = [ln.strip() for ln in (sc / "validation_list.txt").read_text().splitlines() if ln.strip()]
        segs = [Segment(sc / ln, 0.0, None, ln.split("/")[0], "speech_commands") for ln in lines
                if ln.split("/")[0] in COMMAND_WORDS]
        sets["speech_commands"] = [segs[i] for i in stratified_pick([s.label for s in segs], per_class, seed)]
    return {name: segs for name, segs in sets.items() if len({s.label for s in segs}) >= 2}
