"""Result records: one JSON file per run, written atomically, never overwritten.

A record is the unit of trust: it names exactly what was evaluated (upstream, options, checkpoint
hash), on what (task, dataset path and manifest hash, split scored), how (protocol, how the
learning rate and epoch were selected - always on validation, with every grid point's validation
score), and with what code (package version, git commit). Concurrent runs write distinct files
(`<time>-<pid>-<random>`) through `atomic_write_json`, so any number of writers can share a
results directory and readers never see half a record.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import secrets
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from upstreams.fileio import atomic_write_json

from . import __version__

__all__ = ["ResultRecord", "write_record", "read_records", "RunTimer", "git_commit", "RECORDS_DIR", "REQUIRED"]

RECORDS_DIR = "records"
REQUIRED = ("upstream", "task", "protocol", "metric", "score")


@dataclass
class ResultRecord:
    upstream: str
    task: str
    protocol: str
    metric: str  # name of the headline metric, e.g. "accuracy", "per", "mtwv", "icbhi_score"
    score: float
    higher_is_better: bool = True
    split: str = "test"  # what the headline score was measured on
    secondary: dict[str, Any] = field(default_factory=dict)  # every other metric (std, Se, Sp, CER, ATWV, ...)
    selection: dict[str, Any] = field(default_factory=dict)  # {"on": "validation", "grid": [...], "chosen": {...}}
    lr: float | None = None
    seed: int = 0
    seeds: list[int] = field(default_factory=list)  # every head seed behind `score` (its mean); [seed] for one
    upstream_options: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    dataset: dict[str, Any] = field(default_factory=dict)  # {"name", "path", "profile", "manifest_sha256"}
    details: dict[str, Any] = field(default_factory=dict)  # per-fold scores, layer weights, curves ...
    package_version: str = __version__
    git_commit: str = ""
    wall_time_s: float = 0.0
    peak_memory_mb: float = 0.0
    created: str = ""
    host: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["score"] = float(d["score"])
        return d


def git_commit(repo: Path | None = None) -> str:
    """HEAD of the checkout this package runs from (`+dirty` if modified), or '' outside git."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return ""


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and CUDA peak allocation when used)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rss = max(rss, torch.cuda.max_memory_allocated() / 2**20)
    return round(rss, 1)


class RunTimer:
    """Wall time and peak memory of a run, filled into a record on `finish`."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def finish(self, record: ResultRecord) -> ResultRecord:
        record.wall_time_s = round(time.perf_counter() - self.t0, 2)
        record.peak_memory_mb = peak_memory_mb()
        record.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        record.git_commit = record.git_commit or git_commit()
        record.host = record.host or {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        }
        record.command = record.command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        return record


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)[:80]


def portable_paths(obj, base: Path | None = None):
    """`obj` with every string naming a path under `base` (default: the working directory) made relative
    to it, so records of runs inside a checkout read the same on every machine (the sha256 fields stay the
    identity). Paths outside `base` are kept as given."""
    prefix = str((base or Path.cwd()).resolve()) + os.sep
    if isinstance(obj, dict):
        return {k: portable_paths(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable_paths(v, base) for v in obj]
    if isinstance(obj, str) and obj.startswith(prefix):
        return obj[len(prefix):]
    return obj


def write_record(record: ResultRecord, results_dir: str | Path) -> Path:
    """Write `record` as a new JSON file under `<results_dir>/records/<task>/`; returns its path."""
    d = portable_paths(record.to_dict())
    missing = [k for k in REQUIRED if d.get(k) in (None, "")]
    if missing:
        raise ValueError(f"result record lacks {', '.join(missing)}")
    if d["score"] != d["score"]:
        raise ValueError(f"result record score is NaN ({record.upstream} / {record.task} / {record.protocol})")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    name = f"{_slug(record.upstream)}__{_slug(record.protocol)}__{stamp}-{os.getpid()}-{secrets.token_hex(3)}.json"
    path = Path(results_dir) / RECORDS_DIR / _slug(record.task) / name
    atomic_write_json(path, d)
    return path


def read_records(results_dir: str | Path) -> list[dict]:
    """Every valid record under `results_dir` (unreadable or incomplete files are reported and skipped)."""
    out = []
    base = Path(results_dir) / RECORDS_DIR
    for p in sorted(base.glob("*/*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"warning: skipping unreadable record {p}: {exc}", file=sys.stderr)
            continue
        if not all(k in rec for k in REQUIRED):
            print(f"warning: skipping {p}: missing {[k for k in REQUIRED if k not in rec]}", file=sys.stderr)
            continue
        rec["_path"] = str(p)
        out.append(rec)
    return out
