"""A prebuilt log-mel corpus that travels without its audio: `data.features` / `data.probe_features`.

Why: a machine that receives only the checkout (the GPU check's device machine: no network, no
generated data, at most 64 MiB carried in all) cannot build the pretraining corpus or its log-mel
cache, whose key needs the audio files. `scripts/gpu_corpus.sh` therefore writes, where the corpus
is built, a few MiB of the same un-normalised float16 log-mel the cache holds, in the same layout:

    <dir>/frames.f16    [total_frames, n_mels] float16, frame-major (as `data._build` writes it)
    <dir>/meta.json     offsets, labels, the front-end config, and an index of every segment
                        (its source, start, frames, and for probe clips the probe set it belongs to)
    <dir>/SHA256SUMS    `sha256sum -c` format over the two files above

`open_prebuilt` memory-maps it as a `MelFeatures` after checking the manifest and that the front
end is the run's (a corpus made with other mel settings would train silently on wrong inputs).
Training reads it exactly as it reads the cache; the probe reads a probe set's clips through
`probe_clips` instead of decoding the ESC-50 / Speech Commands audio.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..fileio import atomic_directory
from ..frontend import LogMelConfig
from ..training.config import ConfigError
from .data import MelFeatures

__all__ = ["PREBUILT_VERSION", "MANIFEST", "write_prebuilt", "open_prebuilt", "probe_clips", "check_manifest"]

PREBUILT_VERSION = 1
MANIFEST = "SHA256SUMS"
_FILES = ("frames.f16", "meta.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_prebuilt(
    directory: str | Path,
    mels: Sequence[Tensor],
    frontend: LogMelConfig,
    labels: Sequence[str] | None = None,
    sets: Sequence[str] | None = None,
    sources: Sequence[dict] | None = None,
    provenance: dict | None = None,
) -> int:
    """Write `[n_mels, T]` log-mels as a prebuilt corpus in `directory` (atomically); returns its bytes.

    Args:
        labels: per segment ("" = unlabelled); sets: per segment, the probe set it belongs to
            (only for probe clips); sources: per segment, a dict describing where it came from.
        provenance: what built it (profile, index, command), stored in meta.json as is.
    """
    n = len(mels)
    if n == 0:
        raise ValueError("a prebuilt corpus needs at least one segment")
    for name, seq in (("labels", labels), ("sets", sets), ("sources", sources)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries for {n} segments")
    offsets = [0]
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        with open(tmp / "frames.f16", "wb") as fh:
            for i, x in enumerate(mels):
                if x.dim() != 2 or x.shape[0] != frontend.n_mels or x.shape[1] == 0:
                    raise ValueError(f"segment {i} must be [{frontend.n_mels}, frames>0], got {tuple(x.shape)}")
                fh.write(x.T.contiguous().to(torch.float16).numpy().tobytes())
                offsets.append(offsets[-1] + x.shape[1])
        index = [{"frames": offsets[i + 1] - offsets[i], **(sources[i] if sources else {})} for i in range(n)]
        meta = {"version": PREBUILT_VERSION, "prebuilt": True, "frontend": asdict(frontend), "n_mels": frontend.n_mels,
                "offsets": offsets, "labels": list(labels or [""] * n), "sets": list(sets) if sets else None,
                "segments": index, "provenance": provenance or {}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        (tmp / MANIFEST).write_text("".join(f"{_sha256(tmp / f)}  {f}\n" for f in _FILES))
    return sum((directory / f).stat().st_size for f in (*_FILES, MANIFEST))


def check_manifest(directory: str | Path) -> None:
    """Every file of `directory`'s SHA256SUMS exists with that hash; else a ConfigError naming it."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise ConfigError(f"{directory} is not a prebuilt log-mel corpus (no {MANIFEST}); build one with "
                          f"scripts/gpu_corpus.sh")
    for line in manifest.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        path = directory / name
        if not path.is_file():
            raise ConfigError(f"{path} is listed in {manifest} but missing")
        if _sha256(path) != digest:
            raise ConfigError(f"{path} does not match its sha256 in {manifest}: rebuild with scripts/gpu_corpus.sh")


def open_prebuilt(directory: str | Path, frontend: LogMelConfig) -> MelFeatures:
    """Memory-map a prebuilt corpus as `MelFeatures` (index = its meta.json) after checking it."""
    directory = Path(directory).expanduser().resolve()
    check_manifest(directory)
    meta = json.loads((directory / "meta.json").read_text())
    if meta.get("version") != PREBUILT_VERSION or not meta.get("prebuilt"):
        raise ConfigError(f"{directory}/meta.json is not a version-{PREBUILT_VERSION} prebuilt corpus; rebuild it")
    if meta["frontend"] != asdict(frontend):
        raise ConfigError(f"{directory} was made with front end {meta['frontend']}, the run uses {asdict(frontend)}: "
                          f"rebuild it with scripts/gpu_corpus.sh for this config")
    offsets = meta["offsets"]
    frames = np.memmap(directory / "frames.f16", dtype=np.float16, mode="c", shape=(offsets[-1], meta["n_mels"]))
    return MelFeatures(torch.from_numpy(frames), offsets, meta["labels"], directory / "meta.json", directory)


def probe_clips(directory: str | Path, frontend: LogMelConfig) -> dict[str, list[tuple[Tensor, str]]]:
    """Probe set name -> `[(log-mel [n_mels, T] float16, label), ...]` of a prebuilt probe corpus."""
    feats = open_prebuilt(directory, frontend)
    sets = json.loads((feats.directory / "meta.json").read_text()).get("sets")
    if not sets:
        raise ConfigError(f"{feats.directory} holds no probe sets (it is a training corpus?): data.probe_features "
                          f"wants the probe/ folder of scripts/gpu_corpus.sh")
    out: dict[str, list[tuple[Tensor, str]]] = {}
    for i, name in enumerate(sets):
        out.setdefault(name, []).append((feats.segment(i), feats.labels[i]))
    return out
