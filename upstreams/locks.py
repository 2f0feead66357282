"""One builder per shared artefact, across processes and hosts: `filelock` locks beside the artefact.

An embedding-cache entry (upstream x dataset key) or a dataset of a data profile is built once: the
first process takes the lock, builds and commits; any other process that asks for the same artefact
meanwhile waits on the lock, then finds the finished artefact and reuses it (callers check again once
they hold the lock). The lock is `filelock.FileLock`, a kernel `flock` on a file kept in place: the
kernel drops it when its holder dies, and on NFSv4 the server drops it when the holder's host stops
renewing its lease, so a lock never needs taking over; where the filesystem has no `flock`, filelock
falls back to its own soft lock. What a dead holder can leave behind is its temporary build directory,
and `upstreams.ownership` decides when that may go. Lock files are never deleted: a waiter that
opened one must lock the same inode as the next taker.

While it waits, a process says who holds the lock (host, pid, since when), from the `<lock>.holder`
record each holder writes once it has the lock.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from .fileio import atomic_write_json
from .ownership import current_owner

__all__ = ["exclusive", "holder_text"]


def holder_text(lock_path: Path) -> str:
    """'host H pid P since T' from the last holder's record, or why it is unknown."""
    try:
        rec = json.loads(Path(f"{lock_path}.holder").read_text())
        return f"host {rec['host']} pid {rec['pid']} since {rec['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not recorded yet"


@contextlib.contextmanager
def exclusive(lock_path: str | Path, what: str, log: Callable[[str], None] | None = None,
              timeout: float | None = None) -> Iterator[bool]:
    """Hold the lock `lock_path` for the block; yields whether another process held it first (so the
    caller should look again for what that one may have finished). `timeout`: seconds to wait before
    `filelock.Timeout` (None: as long as the holder lives)."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    waited = False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        waited = True
        if log is not None:
            log(f"waiting for {what}: another process holds {lock_path.name} ({holder_text(lock_path)})")
        lock.acquire(timeout=-1 if timeout is None else timeout, poll_interval=0.1)
    try:
        record = {**current_owner().describe(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "what": what}
        with contextlib.suppress(OSError):  # the record is for messages only
            atomic_write_json(f"{lock_path}.holder", record)
        yield waited
    finally:
        lock.release()
