"""Crash-safe file writing and hashing shared by all three packages.

`upstreams` is the bottom layer of the suite, so these generic helpers live here and `tasks` and
`bench` import them from here. Every artefact the suite produces (checkpoints, result records,
dataset manifests, cache entries) goes through one of these functions so that a killed process
leaves either the old file or the new one, never a truncated one. What they create gets the modes the
process umask gives (0644 files and 0755 folders under umask 022), not the owner-only modes of the
`tempfile` functions they start from. JSON is written strictly (RFC 8259: no bare `NaN`/`Infinity`
tokens): non-finite numbers become null, and `non_finite_paths` says where they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .ownership import Heartbeat, current_owner, owner_gone

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_directory",
    "atomic_path",
    "finite_json",
    "dumps_strict",
    "writable_problem",
    "process_umask",
    "sha256_file",
    "sha256_bytes",
    "temp_owner_alive",
]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def process_umask() -> int:
    """The process umask, read without changing it (Linux: /proc; elsewhere set-and-restore)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_mode(path: Path, base: int) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the mode open()/mkdir() would."""
    with contextlib.suppress(OSError):
        os.chmod(path, base & ~process_umask())


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it is renamed over `dest`.

    The temporary file is in the same directory so the final `os.replace` is atomic on POSIX.
    Use it when a library insists on writing to a path itself (torch.save, soundfile, savefig).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _default_mode(tmp_path, 0o666)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
        _fsync_dir(dest.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_write_text(dest: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(dest, text.encode("utf-8"))


def finite_json(obj: Any, where: str = "") -> tuple[Any, list[str]]:
    """(`obj` with every non-finite float (NaN, +-inf) replaced by None, the paths replaced, e.g. `a.b[2]`).

    Containers are copied (tuples become lists, as JSON has them); everything else is kept as is."""
    found: list[str] = []

    def clean(v: Any, path: str) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            found.append(path or "(value)")
            return None
        if isinstance(v, dict):
            return {k: clean(x, f"{path}.{k}" if path else str(k)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{path}[{i}]") for i, x in enumerate(v)]
        return v

    return clean(obj, where), found


def dumps_strict(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of `obj` (non-finite numbers as null); unknown types are written with str()."""
    return json.dumps(finite_json(obj)[0], indent=indent, sort_keys=False, default=str, allow_nan=False)


def atomic_write_json(dest: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write `obj` as strict JSON (non-finite numbers become null; a record says so in its own fields)."""
    return atomic_write_text(dest, dumps_strict(obj, indent) + "\n")


def writable_problem(path: str | os.PathLike, kind: str = "dir") -> str | None:
    """Why `path` (a folder to create files in, or a `kind="file"` to write) cannot be written, or None.

    Checked by creating (and removing) a file in the nearest existing folder, so read-only file systems,
    a full disk's refusal of a new inode and permission bits (for non-root users) all show up before any work."""
    target = Path(path).expanduser()
    if kind == "file":
        if target.is_dir():
            return f"{target} is a folder, not a file"
        folder = target.parent
    else:
        if target.exists() and not target.is_dir():
            return f"{target} is a file, not a folder"
        folder = target
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{folder} cannot be created: {existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".bench-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{existing} is not writable ({exc.strerror or exc})"
    return None


def temp_owner_alive(tmp: Path) -> bool:
    """Whether the owner of temp dir `.<name>.tmp-<owner tag>-...` may still be working on it.

    False only when `ownership.owner_gone` proves it gone (a dead PID of this host and boot, a rebooted
    host, or another host silent for `$BENCH_STALE_SECONDS`), so a build in progress on another host
    sharing the filesystem is never removed."""
    try:
        tag = tmp.name.rsplit(".tmp-", 1)[1]
        touched = tmp.stat().st_mtime
    except (IndexError, FileNotFoundError):
        return False
    return owner_gone(tag, touched) is None


@contextlib.contextmanager
def atomic_directory(dest: str | os.PathLike,
                     keep_existing: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `dest` only if the block succeeds.

    An interrupted build leaves a `.<name>.tmp-<owner>-*` directory behind, never a half-written `dest`
    that looks complete; the next attempt removes it once its owner is provably gone
    (`temp_owner_alive`), and the owner's heartbeat keeps it from looking abandoned meanwhile.
    `keep_existing(dest)`: when it says a `dest` that appeared meanwhile (another process or host
    finished first) is complete, that one is kept and this build discarded, so readers of a finished
    directory never see it swapped.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        if not temp_owner_alive(stale):
            shutil.rmtree(stale, ignore_errors=True)
    tag = current_owner().tag
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{tag}-", dir=dest.parent))
    _default_mode(tmp, 0o777)
    try:
        with Heartbeat(tmp):
            yield tmp
        if dest.exists() and keep_existing is not None and keep_existing(dest):
            return
        if dest.exists():
            old = dest.with_name(f".{dest.name}.tmp-{tag}-old")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
