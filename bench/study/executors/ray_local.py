"""A throwaway single-node Ray cluster on loopback, for trying `--executor ray`, the tests and the benchmark.

`local_ray_cluster()` runs `ray start --head --block` on 127.0.0.1 in its own process group with its
own temp dir, waits until the head answers, yields its address, and on exit ends that process group
(SIGTERM, then SIGKILL after a bounded wait): only the processes it started, never other Ray clusters.
Its workers get the parent's `PYTHONPATH` with this checkout first, so they run the same code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ...errors import UserError

__all__ = ["local_ray_cluster", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def local_ray_cluster(num_cpus: int = 2, start_timeout: float = 90.0, stop_timeout: float = 8.0):
    """Yield "127.0.0.1:PORT" of a fresh head node with `num_cpus` CPUs; stop it whatever happens."""
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    if not Path(ray_bin).exists():
        raise UserError("no `ray` command: pip install 'ray[default]'")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    repo = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p),
           "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [ray_bin, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--num-cpus", str(num_cpus), "--num-gpus", "0", "--object-store-memory", str(300 * 2**20),
           "--include-dashboard=false", "--disable-usage-stats",
           "--temp-dir", temp]
    log = open(Path(temp) / "ray-start.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (Path(temp) / "ray-start.log").read_text()[-2000:]
                raise RuntimeError(f"ray start --head did not come up on 127.0.0.1:{port}:\n{tail}")
            time.sleep(0.5)
        time.sleep(2.0)  # the raylet registers with the head just after the GCS port opens
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc, stop_timeout)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    """End the process group `ray start --block` leads (it stops its cluster on SIGTERM), then any straggler."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; its children (gcs, raylet, workers) share the group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
