"""What a task read, as one content hash: the dataset identity of result records and cache keys.

A dataset is identified by exactly the files a task reads (audio, metadata CSV, split lists,
annotations, transcripts, lexicon), each by its path relative to the dataset folder and the
sha256 of its full content:

* built datasets (a `MANIFEST.json` in the dataset folder or the one above the corpus): every file
  read must be listed in the manifest with the same sha256, else `DatasetError` names the file and
  says to rebuild it or to use the folder as a real corpus; the identity is then the manifest's
  own sha256 (what `bench data info` shows), which now vouches for the bytes that were read;
* real corpora: the identity is `fp-` + the content hash.

Either way `content_sha256` hashes the (relative path, sha256) list of the files read, and
`sha256_of(paths)` the same for a subset (the audio an embedding-cache entry was extracted from).

Cost: full content hashing is paid once per file version. Digests are memoised by
(path, device, inode, size, mtime_ns, ctime_ns), in memory and in a small SQLite file
(`$BENCH_HASH_CACHE`; default `<user cache>/audio-repr-bench/file-sha256.sqlite`; `off` keeps
only the in-memory memo). Any write or rename sets a file's ctime, which cannot be set back, so
a file replaced by another of the same size, even with its mtime restored, is hashed again.
Files changed in the last `RACY_SECONDS` are not memoised (git's racy-timestamp rule). Measured on
a 2-core machine that was busy with another job, files in the page cache: the mini ESC-50 (481 files read,
212 MB) and ICBHI (449 files, 251 MB) take 0.42 s and 0.54 s to fingerprint the first time (0.15-0.3 s
without the SQLite writes) and 13-15 ms in every later process (a stat and a memo lookup per file).
A real corpus costs one full read on its first run (about 1.5 s/GB warm, disk speed cold).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import platformdirs

from upstreams.fileio import sha256_file

from .build import BUILD_INFO, MANIFEST, DatasetError

__all__ = ["DatasetIdentity", "identify", "manifest_dir", "file_digests", "RACY_SECONDS"]

RACY_SECONDS = 2.0
OUTSIDE = "<outside>"  # prefix of files read from beyond the dataset folder (a lexicon given by path...)

_MEMO: dict[tuple, str] = {}


def _store_path() -> Path | None:
    env = os.environ.get("BENCH_HASH_CACHE")
    if env:
        return None if env.lower() == "off" else Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("audio-repr-bench")) / "file-sha256.sqlite"


class _Store:
    """The persistent memo; any SQLite problem (read-only disk, lock) just turns it off."""

    def __init__(self) -> None:
        self.db = None
        path = _store_path()
        if path is None:
            return
        with contextlib.suppress(OSError, sqlite3.Error):
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), timeout=10)
            db.execute("CREATE TABLE IF NOT EXISTS digest (path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, "
                       "size INTEGER, mtime INTEGER, ctime INTEGER, sha256 TEXT)")
            self.db = db

    def get(self, key: tuple) -> str | None:
        if self.db is None:
            return None
        try:
            row = self.db.execute("SELECT dev, ino, size, mtime, ctime, sha256 FROM digest WHERE path = ?",
                                  (key[0],)).fetchone()
        except sqlite3.Error:
            self.db = None
            return None
        return row[5] if row is not None and tuple(row[:5]) == key[1:] else None

    def put(self, rows: list[tuple[tuple, str]]) -> None:
        if self.db is None or not rows:
            return
        with contextlib.suppress(sqlite3.Error):
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO digest VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    [(*k, sha) for k, sha in rows])

    def close(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()


def _key(path: str, st: os.stat_result) -> tuple:
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digests(paths: Iterable[Path]) -> dict[str, tuple[str, int]]:
    """absolute path -> (sha256, size) of each file, memoised by its stat (see the module docstring)."""
    store = _Store()
    out: dict[str, tuple[str, int]] = {}
    new: list[tuple[tuple, str]] = []
    try:
        for p in paths:
            ap = os.path.abspath(p)
            if ap in out:
                continue
            try:
                st = os.stat(ap)
            except FileNotFoundError:
                raise DatasetError(f"{p}: file not found while fingerprinting the dataset (was it removed "
                                   f"during the run?); restore it, or pass --skip-bad to leave it out") from None
            key = _key(ap, st)
            sha = _MEMO.get(key) or store.get(key)
            if sha is None:
                sha = sha256_file(ap)
                settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_SECONDS * 1e9
                if settled and _key(ap, os.stat(ap)) == key:  # unchanged while it was read
                    new.append((key, sha))
                    _MEMO[key] = sha
            else:
                _MEMO[key] = sha
            out[ap] = (sha, st.st_size)
        store.put(new)
    finally:
        store.close()
    return out


def manifest_dir(top: Path) -> tuple[Path, Path | None]:
    """(dataset folder, its MANIFEST.json or None): `top` or the folder above it when that holds the manifest."""
    top = Path(top)
    for d in (top, top.parent):
        if (d / MANIFEST).is_file():
            return d, d / MANIFEST
    return top, None


def _relative(path: str, directory: Path) -> str:
    try:
        return Path(path).relative_to(os.path.abspath(directory)).as_posix()
    except ValueError:
        return f"{OUTSIDE}/{Path(path).name}"


def _combine(digests: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{rel}\t{sha}\n" for rel, sha in sorted(digests.items())).encode()).hexdigest()


def _remedy(directory: Path, manifest: Path, recorded: dict) -> str:
    name, profile = recorded.get("dataset", directory.name), recorded.get("profile", "mini")
    real = f"or delete {manifest} to use the folder as a real corpus"
    if directory.parent.name == profile and directory.name == name:  # <root>/<profile>/<name>: a built dataset
        return f"rebuild it with `bench data build --profile {profile} --only {name} --force " \
               f"--root {directory.parent.parent}`, {real}"
    return f"restore the file from a fresh build (`bench data build --profile {profile} --only {name}`), {real}"


@dataclass
class DatasetIdentity:
    directory: Path  # the built dataset's folder (with MANIFEST.json), or the corpus itself
    manifest_sha256: str  # sha256 of MANIFEST.json (files verified against it), or "fp-" + content_sha256
    content_sha256: str  # over (relative path, sha256) of exactly the files read
    files: int
    bytes: int
    seconds: float
    manifest: Path | None = None
    digests: dict[str, str] = field(default_factory=dict, repr=False)  # relative path -> sha256
    _recorded: dict | None = field(default=None, repr=False)

    def sha256_of(self, paths: Iterable[Path]) -> str:
        """The content hash of a subset of files (verified like the rest; files not seen yet are hashed)."""
        return _combine(_verified(self.directory, self.manifest, self._recorded, paths))

    def record(self) -> dict:
        """The fields a result record's `dataset` carries."""
        return {"manifest_sha256": self.manifest_sha256, "content_sha256": self.content_sha256,
                "fingerprint": {"files": self.files, "mb": round(self.bytes / 1e6, 1),
                                "seconds": round(self.seconds, 3), "manifest_verified": self.manifest is not None}}


def _verified(directory: Path, manifest: Path | None, recorded: dict | None, paths: Iterable[Path],
              sizes: list | None = None) -> dict[str, str]:
    out = {}
    files = (recorded or {}).get("files", {})
    paths = list(paths)
    given = {os.path.abspath(p): p for p in paths}  # name files in errors as the caller spelled them
    for ap, (sha, size) in file_digests(paths).items():
        if sizes is not None:
            sizes.append(size)
        rel = _relative(ap, directory)
        if manifest is not None and not rel.startswith(OUTSIDE + "/"):
            if rel not in files:
                raise DatasetError(f"{given[ap]}: not listed in {manifest}, so this is not the dataset that was "
                                   f"built; {_remedy(directory, manifest, recorded)}")
            if files[rel] != sha:
                raise DatasetError(f"{given[ap]}: content differs from {manifest} (sha256 {sha[:12]} on disk, "
                                   f"{files[rel][:12]} recorded); {_remedy(directory, manifest, recorded)}")
        out[rel] = sha
    return out


def _all_files(directory: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        out += [Path(dirpath) / f for f in sorted(filenames) if f not in (MANIFEST, BUILD_INFO)]
    return out


def identify(top: str | os.PathLike, files: Iterable[Path] | None = None) -> DatasetIdentity:
    """The identity of the dataset at `top` as read through `files` (default: every file under it)."""
    t0 = time.perf_counter()
    directory, manifest = manifest_dir(Path(top))
    recorded = None
    if manifest is not None:
        try:
            recorded = json.loads(manifest.read_text())
            if not isinstance(recorded.get("files"), dict):
                raise ValueError("no 'files' table")
        except (OSError, ValueError, AttributeError) as exc:
            raise DatasetError(f"{manifest}: not a readable dataset manifest ({exc}); rebuild the dataset with "
                               f"`bench data build --force`, or delete it to use the folder as a real corpus") from None
    sizes: list[int] = []
    digests = _verified(directory, manifest, recorded, files if files is not None else _all_files(directory), sizes)
    content = _combine(digests)
    size = sum(sizes)
    man = sha256_file(manifest) if manifest is not None else "fp-" + content
    return DatasetIdentity(directory, man, content, len(digests), size, time.perf_counter() - t0, manifest,
                           digests, recorded)
