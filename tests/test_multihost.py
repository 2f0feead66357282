"""Several processes and hosts sharing one embedding cache and one data root (issue 17, multi-host safety).

Two hosts are played on one machine by giving subprocesses another `BENCH_OWNER_HOST` (and, for a
reboot, another `BENCH_OWNER_BOOT_ID`), the identity `upstreams.ownership` records in every temporary
build directory. What is checked is behaviour: an entry asked for by two processes is built once and
read identically by both; a build in progress on another host is never removed, whatever its PID
looks like here; a dead owner's leftovers (same host, or a rebooted one) are. Every subprocess runs
under a timeout, so a lock that is never released fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.cache import CacheEntry, EmbeddingCache
from upstreams.fileio import atomic_directory, temp_owner_alive
from upstreams.locks import exclusive
from upstreams.ownership import current_owner, owner_gone

REPO = Path(__file__).resolve().parents[1]
LIMIT = 120  # seconds any one subprocess may take


def _env(host: str | None = None, boot: str | None = None, **extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", **extra}
    for var, value in (("BENCH_OWNER_HOST", host), ("BENCH_OWNER_BOOT_ID", boot)):
        if value is None:
            env.pop(var, None)
        else:
            env[var] = value
    return env


def _start(code: str, *args: str, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=_env(**env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"subprocess still running after {LIMIT} s (a lock never released?)\n{err[-2000:]}")
    assert proc.returncode == 0, err[-3000:]
    return out, err


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp-*"))


# -- the ownership rule ----------------------------------------------------------------------------------------
def _tag_as(monkeypatch, host: str | None = None, boot: str | None = None, pid: int | None = None) -> str:
    """The owner tag a process of `host`/`boot` with `pid` writes (this process's identity otherwise)."""
    with monkeypatch.context() as m:
        if host:
            m.setenv("BENCH_OWNER_HOST", host)
        if boot:
            m.setenv("BENCH_OWNER_BOOT_ID", boot)
        tag = current_owner().tag
    return tag if pid is None else f"{pid}-{tag.split('-', 1)[1]}"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_owner_rule(monkeypatch):
    monkeypatch.delenv("BENCH_STALE_SECONDS", raising=False)
    now, day = time.time(), 24 * 3600
    dead, live = _dead_pid(), os.getppid()
    # same host and boot: the PID decides, at once
    assert owner_gone(_tag_as(monkeypatch, pid=live) + "-x", now) is None
    assert "exited" in owner_gone(_tag_as(monkeypatch, pid=dead) + "-x", now)
    # same host, another boot: rebooted since, so gone whatever the PID
    assert "rebooted" in owner_gone(_tag_as(monkeypatch, boot="an-earlier-boot", pid=live) + "-x", now)
    # another host: its PID means nothing here; only a long silence counts (24 h unless configured)
    other = _tag_as(monkeypatch, host="other-node", pid=dead) + "-x"
    assert owner_gone(other, now - day + 60) is None
    assert "another host" in owner_gone(other, now - day - 60)
    monkeypatch.setenv("BENCH_STALE_SECONDS", "30")
    assert owner_gone(other, now - 20) is None and owner_gone(other, now - 40)
    # a name from code that recorded a PID only: host unknown, so the same silence rule
    assert owner_gone(f"{dead}-abc123", now - 20) is None and owner_gone(f"{dead}-abc123", now - 40)
    monkeypatch.setenv("BENCH_STALE_SECONDS", "soon")
    with pytest.raises(ValueError, match="BENCH_STALE_SECONDS"):
        owner_gone(other, now)


# -- leftovers: another host's live build stays, a dead owner's goes -----------------------------------------
_LEAVE_BUILD = """
import os, sys
from upstreams.fileio import atomic_directory
with atomic_directory(sys.argv[1]) as tmp:
    (tmp / "half.bin").write_bytes(b"x" * 1000)
    print(tmp, flush=True)
    if sys.argv[2] == "die":
        os._exit(0)  # killed mid-build: the temporary directory stays behind
    sys.stdin.read()  # alive until the test closes stdin
"""


def _leave_build(dest: Path, mode: str, **who) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", _LEAVE_BUILD, str(dest), mode], env=_env(**who), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
    line = proc.stdout.readline().strip()
    assert line, "the build subprocess failed to start"
    if mode == "die":
        proc.wait(timeout=LIMIT)
    return proc, Path(line)


def _rebuild(dest: Path) -> None:
    with atomic_directory(dest) as tmp:
        (tmp / "done.txt").write_text("built here")


def test_another_hosts_build_in_progress_is_never_removed(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_STALE_SECONDS", raising=False)
    dest = tmp_path / "cache" / "ab" / "entry"
    # "host-b" built into the shared folder and its PID is gone here, as a PID of another node always looks
    _, tmp_b = _leave_build(dest, "die", host="host-b")
    assert temp_owner_alive(tmp_b)
    _rebuild(dest)  # this host builds the same entry: cleans up before, commits after
    EmbeddingCache(tmp_path / "cache").clear()  # and clears interrupted builds
    assert (tmp_b / "half.bin").read_bytes() == b"x" * 1000 and (dest / "done.txt").exists()
    # with a 3 s silence rule: host-b's dead build goes, a running one's heartbeat keeps its build
    monkeypatch.setenv("BENCH_STALE_SECONDS", "3")
    live, tmp_live = _leave_build(dest, "live", host="host-c", BENCH_STALE_SECONDS="3")
    try:
        time.sleep(4.5)
        _rebuild(dest)
        assert not tmp_b.exists()
        assert (tmp_live / "half.bin").exists() and temp_owner_alive(tmp_live)
    finally:
        live.stdin.close()
        live.wait(timeout=LIMIT)
    assert live.returncode == 0 and not tmp_live.exists()  # it committed its own build in the end
    assert _temps(dest.parent) == [] and (dest / "half.bin").exists()


@pytest.mark.parametrize("who", [{}, {"boot": "boot-before-the-reboot"}], ids=["process-died", "host-rebooted"])
def test_dead_same_host_owners_leftovers_are_recovered_at_once(tmp_path, monkeypatch, who):
    monkeypatch.delenv("BENCH_STALE_SECONDS", raising=False)  # 24 h: no waiting involved
    dest = tmp_path / "data" / "tiny" / "esc50"
    _, left = _leave_build(dest, "die", **who)
    assert left.exists() and not temp_owner_alive(left)
    _rebuild(dest)
    assert _temps(dest.parent) == [] and (dest / "done.txt").read_text() == "built here"


_HOLD_AND_DIE = """
import os, signal, sys
from upstreams.locks import exclusive
with exclusive(sys.argv[1], "a test entry"):
    print("held", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_lock_holder_does_not_block_the_next_builder(tmp_path):
    lock = tmp_path / "ab" / ".entry.lock"
    proc = _start(_HOLD_AND_DIE, lock)
    out, _ = proc.communicate(timeout=LIMIT)
    assert out.strip() == "held" and proc.returncode == -signal.SIGKILL
    t0 = time.perf_counter()
    with exclusive(lock, "a test entry", timeout=10) as waited:
        assert not waited
    assert time.perf_counter() - t0 < 5


# -- one cache, two hosts --------------------------------------------------------------------------------------
_SHARE = """
import hashlib, json, os, sys, time
from pathlib import Path
import numpy as np
from bench.cache import CacheEntry, EmbeddingCache
root, counter, go, order = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
host = os.environ["BENCH_OWNER_HOST"]

def build_for(i):
    def build(tmp):
        with open(counter, "a") as fh:
            fh.write(f"{i} {host}\\n")
        rows = np.arange(6 * 2 * 4, dtype=np.float16).reshape(6, 2, 4) + i
        with open(tmp / "features.f16", "wb") as fh:
            for r in rows:  # written slowly, so the other host meets it half done
                fh.write(r.tobytes()); fh.flush(); time.sleep(0.05)
        np.save(tmp / "index.npy", np.stack([np.arange(6), np.ones(6, int)], 1))
        return {"rows": 6, "layers": 2, "dim": 4, "examples": 6}
    return build

while not go.exists():
    time.sleep(0.01)
seen = {}
keys = [f"clip{j}" for j in range(6)]
for i in (range(5) if order == "up" else reversed(range(5))):
    e = EmbeddingCache(root).get_or_create({"upstream": {"name": f"model{i}"}, "task": "esc50"}, build_for(i), keys)
    seen[i] = [e.hit, hashlib.sha256(np.ascontiguousarray(e.pooled()).tobytes()).hexdigest()]
print(json.dumps(seen))
"""


def test_two_hosts_share_one_cache_without_losing_or_corrupting_an_entry(tmp_path):
    root, counter, go = tmp_path / "cache", tmp_path / "builds.txt", tmp_path / "go"
    procs = [_start(_SHARE, root, counter, go, order, host=host)
             for host, order in (("host-a", "up"), ("host-b", "down"))]
    go.touch()
    seen = [json.loads(_finish(p)[0]) for p in procs]
    builds = counter.read_text().split("\n")[:-1]
    assert sorted(int(line.split()[0]) for line in builds) == list(range(5)), builds  # each entry built once
    for i in map(str, range(5)):
        assert seen[0][i][1] == seen[1][i][1]  # both hosts read the same features
        assert sorted([seen[0][i][0], seen[1][i][0]]) == [False, True]  # one built it, the other reused it
    entries = EmbeddingCache(root).entries()
    assert sorted(e["upstream"] for e in entries) == [f"model{i}" for i in range(5)]
    for e in entries:
        path = Path(e["path"])
        entry = CacheEntry(path, json.loads((path / "meta.json").read_text()), hit=True)
        expected = np.arange(48, dtype=np.float16).reshape(6, 2, 4) + int(e["upstream"][-1])
        np.testing.assert_array_equal(entry.features, expected)  # whole, as written
    assert list(root.glob("*/.*.tmp-*")) == []


# -- real extraction and a real data build, asked for twice at once ----------------------------------------------
_EXTRACT = """
import os, sys, time
from pathlib import Path
import numpy as np
import bench.protocols.clip as cr
from tiny_requests import tiny_request
from bench.run import run
data_root, tmp, counter, go, out = (Path(a) for a in sys.argv[1:6])
real_extract, real_knn = cr.extract_to, cr.run_knn

def counted_extract(*args, **kw):
    with open(counter, "a") as fh:
        fh.write(os.environ["BENCH_OWNER_HOST"] + "\\n")
    time.sleep(1.5)  # long enough that the other process asks for the entry while this one extracts
    return real_extract(*args, **kw)

def saving_knn(task, pooled, *args, **kw):
    np.save(out, pooled)  # the arrays this process's head was given
    return real_knn(task, pooled, *args, **kw)

cr.extract_to, cr.run_knn = counted_extract, saving_knn
req = tiny_request(data_root, tmp, upstream="fbank", upstream_options={}, task="esc50", protocol="knn")
while not go.exists():
    time.sleep(0.01)
record, _ = run(req, log=lambda m: None)
print(record.score, record.details["cache"]["hit"])
"""


@pytest.fixture(scope="module")
def tiny_esc50() -> Path:
    from tasks.data import build

    root = Path(os.environ.get("BENCH_TEST_DATA", REPO / ".cache" / "test-data"))
    build("tiny", root=root, only=["esc50"], log=lambda _m: None)
    return root


def test_concurrent_extraction_of_one_entry_runs_once(tmp_path, tiny_esc50):
    counter, go = tmp_path / "extractions.txt", tmp_path / "go"
    procs = [_start(_EXTRACT, tiny_esc50, tmp_path, counter, go, tmp_path / f"{host}.npy", host=host,
                    PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}")
             for host in ("host-a", "host-b")]
    go.touch()
    results = [_finish(p) for p in procs]
    assert len(counter.read_text().splitlines()) == 1  # one extraction for two runs
    scores, hits = zip(*(out.split() for out, _ in results))
    assert scores[0] == scores[1] and sorted(hits) == ["False", "True"]
    assert any("waiting for the embeddings of fbank on esc50" in err for _, err in results)
    a, b = np.load(tmp_path / "host-a.npy"), np.load(tmp_path / "host-b.npy")
    assert a.shape[0] > 0 and np.array_equal(a, b)


_DATA = """
import dataclasses, importlib, os, sys, time
from pathlib import Path
from tasks.data import build
build_module = importlib.import_module("tasks.data.build")  # the module, which `build` the function shadows
root, counter, go = (Path(a) for a in sys.argv[1:4])
registry = build_module.builders()
real = registry["icbhi"]

def counted(ctx):
    with open(counter, "a") as fh:
        fh.write(os.environ["BENCH_OWNER_HOST"] + "\\n")
    time.sleep(1.0)  # the other process arrives while this one builds
    real.build(ctx)

build_module._BUILDERS["icbhi"] = dataclasses.replace(real, build=counted)
while not go.exists():
    time.sleep(0.01)
done = build("tiny", root=root, only=["icbhi"], workers=1, log=print)
print("RESULT", done["icbhi"])
"""


def test_concurrent_data_build_of_tiny_runs_once(tmp_path):
    root, counter, go = tmp_path / "data", tmp_path / "builds.txt", tmp_path / "go"
    procs = [_start(_DATA, root, counter, go, host=host) for host in ("host-a", "host-b")]
    go.touch()
    outs = [_finish(p)[0] for p in procs]
    assert len(counter.read_text().splitlines()) == 1
    assert sum("icbhi: building" in o for o in outs) == 1
    assert sum("waiting for the tiny build of icbhi" in o and "built by another process" in o for o in outs) == 1
    dest = root / "tiny" / "icbhi"
    assert all(f"RESULT {dest}" in o for o in outs) and (dest / "MANIFEST.json").exists()
    assert _temps(dest.parent) == []
