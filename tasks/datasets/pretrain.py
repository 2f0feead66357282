"""Pretraining index loader: `index.csv` (`path,start,stop,label,source`) -> `AudioExample`s.

The format is defined in `tasks.data.pretrain_builder` and deliberately trivial, because the
pretraining modules in `upstreams` read it with their own few lines of `csv` code (they must not
import `tasks`): paths are relative to the index file's folder, `start`/`stop` are seconds (empty
means the whole file), `label` is empty for unlabeled audio, `source` is a provenance id.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..audio import AudioReadError
from ..data.build import DatasetNotBuiltError, dataset_dir
from .base import AudioExample
from .layout import ExampleList, check_audio

__all__ = ["CORPORA", "COLUMNS", "load_pretrain_index", "index_path"]

CORPORA = ("general", "respiratory", "noise")
COLUMNS = ("path", "start", "stop", "label", "source")


def index_path(corpus: str = "general", *, profile: str = "mini", root: str | os.PathLike | None = None) -> Path:
    """`<root>/<profile>/pretrain/<corpus>/index.csv`, or `DatasetNotBuiltError` saying how to build it."""
    if corpus not in CORPORA:
        raise ValueError(f"unknown pretraining corpus '{corpus}'; choose one of {', '.join(CORPORA)}")
    path = dataset_dir("pretrain", profile, root) / corpus / "index.csv"
    if not path.is_file():
        raise DatasetNotBuiltError(
            f"pretraining corpus '{corpus}' is not built for profile '{profile}' (no {path}): run "
            f"`bench data build --profile {profile} --only pretrain` or pass `--dataset PATH` to an index.csv"
        )
    return path


def load_pretrain_index(path: str | os.PathLike, *, check: bool = True, skip_bad: bool = False) -> ExampleList:
    """Rows of an `index.csv` (or of `<dir>/index.csv`) as examples with `meta={'source': ...}`.

    With `check`, every distinct audio file's header is read once so that a missing, empty or
    corrupt file raises `AudioReadError` naming it (or is skipped and counted with `skip_bad`).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "index.csv"
    if not path.is_file():
        raise DatasetNotBuiltError(f"{path}: no pretraining index here; run `bench data build --only pretrain`")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: header must be {','.join(COLUMNS)}, got {reader.fieldnames}")
        rows = list(reader)
    base = path.parent
    out = ExampleList()
    bad: dict[Path, str] = {}
    ok: set[Path] = set()
    for i, r in enumerate(rows):
        audio = base / r["path"]
        if check and audio not in ok:
            if audio not in bad:
                try:
                    check_audio(audio)
                    ok.add(audio)
                except AudioReadError as exc:
                    if not skip_bad:
                        raise
                    bad[audio] = str(exc)
            if audio in bad:
                continue
        out.append(
            AudioExample(
                key=f"{r['path']}@{r['start'] or 0}",
                path=audio,
                start=float(r["start"]) if r["start"] else None,
                stop=float(r["stop"]) if r["stop"] else None,
                label=r["label"] or None,
                meta={"source": r["source"], "row": i},
            )
        )
    out.skipped.update({str(p): why for p, why in bad.items()})
    return out
