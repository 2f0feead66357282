"""Who owns a build in progress, and when its leftovers may be removed, on one machine or many.

A temporary build directory (`fileio.atomic_directory`) carries its owner in its name:
`.<name>.tmp-<pid>-h<host>-b<boot>-<random>`, where `<host>` and `<boot>` are short hashes of the
host (hostname, `/etc/machine-id`, so two machines both named `localhost` stay apart, and the PID
namespace, so containers that share a hostname do too) and of the Linux boot id
(`/proc/sys/kernel/random/boot_id`). A PID alone says nothing on a shared filesystem (NFS, cluster
scratch): PID 4242 may be dead here and busy building on the next node. So leftovers are taken over
only when their owner is provably gone (`owner_gone`):

- same host, same boot, PID not running here: the process died;
- same host, another boot id: the machine rebooted since, so every process of the old boot is gone;
- another host (or a name without an owner, made by older code): only when nothing has touched the
  directory for `stale_after()` seconds (`$BENCH_STALE_SECONDS`, default 24 h). A live owner touches it
  every `heartbeat_interval()` seconds (`Heartbeat`), so only a host that died (or hung that long)
  loses its work; the default is long because a leftover costs disk space only, never a wrong result.

`$BENCH_OWNER_HOST` and `$BENCH_OWNER_BOOT_ID` replace the hostname and boot id: the tests use them to
pose as two hosts on one machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Owner", "current_owner", "owner_gone", "stale_after", "heartbeat_interval", "Heartbeat"]

DEFAULT_STALE_SECONDS = 24 * 3600
_TAG = re.compile(r"^(?P<pid>\d+)-h(?P<host>[0-9a-f]{8})-b(?P<boot>[0-9a-f]{8})-")


def _short(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


_INITIAL_PID_NAMESPACE = 0xEFFFFFFC  # the inode Linux reserves for the host's own PID namespace


def _machine() -> str:
    """What tells this machine (and PID namespace) from another with the same hostname."""
    parts = []
    for f in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            parts.append(Path(f).read_text().strip())
            break
    with contextlib.suppress(OSError):
        ns = os.stat("/proc/self/ns/pid").st_ino
        if ns != _INITIAL_PID_NAMESPACE:
            parts.append(f"pidns:{ns}")
    return "/".join(parts)


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""  # not Linux: a reboot is not detected, the PID rule still holds on this host


@dataclass(frozen=True)
class Owner:
    """One process on one boot of one host."""

    host: str  # hostname
    machine: str  # machine id and PID namespace (`_machine`)
    boot_id: str
    pid: int

    @property
    def host_key(self) -> str:
        return _short(f"{self.host}|{self.machine}")

    @property
    def tag(self) -> str:
        """`<pid>-h<host hash>-b<boot hash>`: what temporary names carry (hashes keep names short and safe)."""
        return f"{self.pid}-h{self.host_key}-b{_short(self.boot_id)}"

    def describe(self) -> dict:
        return {"host": self.host, "boot_id": self.boot_id, "pid": self.pid}


def current_owner() -> Owner:
    host = os.environ.get("BENCH_OWNER_HOST") or socket.gethostname()
    boot = os.environ.get("BENCH_OWNER_BOOT_ID") or _boot_id()
    return Owner(host, _machine(), boot, os.getpid())


def stale_after() -> float:
    """Seconds without a sign of life after which another host's leftovers may be removed."""
    raw = os.environ.get("BENCH_STALE_SECONDS", "")
    try:
        return float(raw) if raw else DEFAULT_STALE_SECONDS
    except ValueError:
        raise ValueError(f"BENCH_STALE_SECONDS={raw!r} is not a number of seconds") from None


def heartbeat_interval() -> float:
    """How often a live owner touches its work: well inside `stale_after()`, at most once a minute."""
    return min(60.0, max(0.05, stale_after() / 20))


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host can still work: it exists and is not a zombie (exited, unreaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def owner_gone(tag: str, last_touched: float, now: float | None = None) -> str | None:
    """Why the owner named by `tag` (the part of a name after `.tmp-`) is provably gone, else None.

    `last_touched`: the newest mtime of its work (the owner's heartbeat keeps it fresh)."""
    me = current_owner()
    silent = (time.time() if now is None else now) - last_touched
    m = _TAG.match(tag)
    if m is None:  # made by code that recorded a PID only: which host it ran on is unknown
        if silent > stale_after():
            return f"no owner host recorded, untouched for {silent:.0f} s (> {stale_after():.0f} s)"
        return None
    pid = int(m["pid"])
    if m["host"] != me.host_key:
        if silent > stale_after():
            return f"owned by another host, untouched for {silent:.0f} s (> {stale_after():.0f} s)"
        return None
    if m["boot"] != _short(me.boot_id):
        return "its host has rebooted since"
    if pid == me.pid:
        return None  # this process (another thread's build): never ours to remove
    if not _pid_alive(pid):
        return f"process {pid} on this host has exited"
    return None


class Heartbeat:
    """Touch `path` every `heartbeat_interval()` seconds from a daemon thread while the block runs.

    A build writes into files whose growth does not change its directory's mtime; the heartbeat is what
    tells other hosts the owner is alive (`owner_gone`)."""

    def __init__(self, path: Path, interval: float | None = None):
        self.path = Path(path)
        self.interval = heartbeat_interval() if interval is None else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {self.path.name}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):  # the owner renamed or removed it: nothing left to keep alive
                os.utime(self.path)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
