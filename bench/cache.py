"""Embed once, reuse everywhere: the on-disk cache of frozen-upstream features (hear-eval-kit style).

An entry is identified by the sha256 of its key material: the upstream's identity (name, options,
checkpoint sha256), a hash of the code that computes features (every `upstreams/*.py`,
`tasks/audio.py`, `bench/extract.py`), the dataset's identity (`dataset_manifest`: its manifest
hash, or `fp-` + content hash for a real corpus) and `audio_sha256`, the content hash of exactly
the audio files the entry is extracted from (`tasks.data.identity`: full sha256 of every file,
memoised by its stat, and checked against MANIFEST.json when there is one), the exact list of
example keys, and the extraction settings (pooling, crop length, precision). Change any of them
(replace one clip, even by one of the same size and mtime) and a new entry is made; protocols,
layers, learning rates and folds all share one entry.

Entries are built in a temporary directory and renamed into place with a `DONE` marker, so an
interrupted extraction never leaves a corrupt entry; features are float16 and memory-mapped.
The cache may be shared by processes on several hosts (NFS, cluster scratch): each entry is extracted
under its own lock (`upstreams.locks`, `<root>/<key[:2]>/.<key>.lock`), so a second process asking
for an entry being extracted waits and then reuses it, and leftovers of a dead extraction are removed
only when their owner is provably gone (`upstreams.ownership`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import platformdirs

from upstreams.fileio import atomic_directory, atomic_write_json, temp_owner_alive
from upstreams.locks import exclusive

__all__ = ["cache_root", "code_fingerprint", "CacheEntry", "EmbeddingCache"]


def _stderr(message: str) -> None:
    print(f"[cache] {message}", file=sys.stderr, flush=True)

_REPO = Path(__file__).resolve().parents[1]


def cache_root(root: str | os.PathLike | None = None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("audio-repr-bench")) / "embeddings"


_FINGERPRINT: str | None = None


def code_fingerprint() -> str:
    """sha256 over the source files that determine feature values."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        files = sorted((_REPO / "upstreams").rglob("*.py")) + [_REPO / "tasks" / "audio.py", _REPO / "bench" / "extract.py"]
        h = hashlib.sha256()
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(_REPO)).encode())
            h.update(f.read_bytes())
        _FINGERPRINT = h.hexdigest()
    return _FINGERPRINT


@dataclass
class CacheEntry:
    path: Path
    meta: dict
    hit: bool  # True when the entry existed before this call

    @property
    def features(self) -> np.memmap:
        """`[rows, layers, dim]` float16, read-only memory map."""
        m = self.meta
        return np.memmap(self.path / "features.f16", dtype=np.float16, mode="r",
                         shape=(m["rows"], m["layers"], m["dim"]))

    @property
    def index(self) -> np.ndarray:
        """`[examples, 2]`: first row and number of rows of each example."""
        return np.load(self.path / "index.npy")

    def pooled(self, layer_normed: bool = False) -> np.ndarray:
        """`[examples, layers, dim]` float32 for entries with one row per example; `layer_normed`: the
        time mean of layer-normed frames (`bench.extract`), the normalised `weighted` head's input."""
        idx = self.index
        if not (idx[:, 1] == 1).all():
            raise ValueError(f"cache entry {self.path.name} holds frames, not pooled features")
        if layer_normed:
            m = self.meta
            feats = np.memmap(self.path / "features_ln.f16", dtype=np.float16, mode="r",
                              shape=(m["rows"], m["layers"], m["dim"]))
            return np.asarray(feats[idx[:, 0]], dtype=np.float32)
        return np.asarray(self.features[idx[:, 0]], dtype=np.float32)

    def frames(self, i: int) -> np.ndarray:
        start, n = self.index[i]
        return self.features[start : start + n]


class EmbeddingCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = cache_root(root)

    @staticmethod
    def key(material: dict) -> str:
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lock_path(self, key: str) -> Path:
        return self.root / key[:2] / f".{key}.lock"

    def lookup(self, material: dict) -> CacheEntry | None:
        d = self.entry_dir(self.key(material))
        if (d / "DONE").exists():
            return CacheEntry(d, json.loads((d / "meta.json").read_text()), hit=True)
        return None

    def get_or_create(
        self, material: dict, build: Callable[[Path], dict], example_keys: Sequence[str],
        log: Callable[[str], None] | None = None,
    ) -> CacheEntry:
        """Return the entry for `material`, calling `build(tmpdir) -> shape meta` only on a miss.

        A miss takes the entry's lock first: of several processes (on any hosts) that miss the same
        entry, one builds it and the others wait, then return it as a hit. `log` (default: stderr, as
        stdout may carry a JSON record) hears whom a waiting process waits for."""
        material = {**material, "code": code_fingerprint(),
                    "examples_sha256": hashlib.sha256("\n".join(example_keys).encode()).hexdigest()}
        hit = self.lookup(material)
        if hit is not None:
            os.utime(hit.path / "DONE")  # last use, for `bench cache info`
            return hit
        key = self.key(material)
        upstream = material.get("upstream")
        name = upstream.get("name") if isinstance(upstream, dict) else upstream
        what = f"the embeddings of {name} on {material.get('task')} (cache entry {key[:16]})"
        with exclusive(self.lock_path(key), what, log or _stderr):
            hit = self.lookup(material)  # finished by the process we waited for
            if hit is not None:
                return hit
            self._build(key, material, build, example_keys)
        dest = self.entry_dir(key)  # this build, or an identical one another host committed first
        return CacheEntry(dest, json.loads((dest / "meta.json").read_text()), hit=False)

    def _build(self, key: str, material: dict, build: Callable[[Path], dict], example_keys: Sequence[str]) -> None:
        t0 = time.perf_counter()
        # keep_existing: where locks do not reach across hosts (NFS mounted with local locks), another
        # host may commit the same entry first; then its entry stays and this build is dropped.
        with atomic_directory(self.entry_dir(key), keep_existing=lambda d: (d / "DONE").exists()) as tmp:
            shape = build(tmp)
            meta = {**shape, "key": key, "material": material, "build_seconds": round(time.perf_counter() - t0, 2),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            atomic_write_json(tmp / "meta.json", meta)
            (tmp / "keys.txt").write_text("\n".join(example_keys) + "\n")
            (tmp / "DONE").write_text("")

    def entries(self) -> list[dict]:
        out = []
        for done in sorted(self.root.glob("*/*/DONE")):
            d = done.parent
            try:
                meta = json.loads((d / "meta.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
            mat = meta.get("material", {})
            out.append({
                "key": d.name[:16], "path": str(d), "mb": round(size / 1e6, 1),
                "upstream": mat.get("upstream", {}).get("name"), "task": mat.get("task"),
                "dataset": (mat.get("dataset_manifest") or "")[:12], "pooling": mat.get("settings", {}).get("pooling"),
                "examples": meta.get("examples"), "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(done.stat().st_mtime)),
            })
        return out

    def clear(self, upstream: str | None = None) -> int:
        removed = 0
        for e in self.entries():
            if upstream is None or e["upstream"] == upstream:
                shutil.rmtree(e["path"], ignore_errors=True)
                removed += 1
        # interrupted builds leave temporary directories behind
        if upstream is None:
            for tmp in self.root.glob("*/.*.tmp-*"):
                if not temp_owner_alive(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
        return removed
