"""Result records: one JSON file per run, written atomically, never overwritten.

A record is the unit of trust: it names exactly what was evaluated (upstream, options, checkpoint
hash), on what (task, dataset path and manifest hash, split scored), how (protocol, how the
learning rate and epoch were selected - always on validation, with every grid point's validation
score), and with what code (package version, git commit). Concurrent runs write distinct files
(`<time>-<pid>-<random>`) through `atomic_write_json`, so any number of writers can share a
results directory and readers never see half a record. Records are strict JSON: a non-finite number
(a NaN metric) is written as null and listed under `non_finite_as_null`. When the results directory
cannot take the record after the work is done (a full disk, permissions changed mid-run), the record is
saved under the user cache dir (else the system temp dir) and the error says where.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from upstreams.fileio import atomic_write_json, finite_json, writable_problem

from .. import __version__
from ..errors import UserError

__all__ = ["ResultRecord", "write_record", "read_records", "RunTimer", "git_commit", "RECORDS_DIR", "REQUIRED",
           "record_dict", "check_results_writable", "RecordSavedElsewhere", "fallback_records_dirs"]

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
    repo = repo or Path(__file__).resolve().parents[2]
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


def record_dict(record: ResultRecord) -> dict:
    """The record as written: portable paths, strict-JSON numbers (non-finite ones null, and listed)."""
    d, non_finite = finite_json(portable_paths(record.to_dict()))
    if non_finite:
        d["non_finite_as_null"] = non_finite
    return d


class RecordSavedElsewhere(UserError):
    """The results directory refused the finished record; it was saved at `path` instead."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def fallback_records_dirs() -> list[Path]:
    """Where a record goes when its results directory cannot take it: the user cache dir, else the temp dir."""
    import platformdirs

    return [Path(platformdirs.user_cache_dir("audio-repr-bench")) / "unsaved-records",
            Path(tempfile.gettempdir()) / "audio-repr-bench-unsaved-records"]


def check_results_writable(results_dir: str | Path, task: str, flag: str = "--results") -> None:
    """Fail before any work (one line) when records cannot be written under `results_dir`."""
    problem = writable_problem(Path(results_dir) / RECORDS_DIR / _slug(task))
    if problem:
        raise UserError(f"{flag} {results_dir}: {problem}; choose a writable results directory")


def write_record(record: ResultRecord, results_dir: str | Path) -> Path:
    """Write `record` as a new JSON file under `<results_dir>/records/<task>/`; returns its path.

    If that fails (ENOSPC, permissions), the record is saved in `fallback_records_dirs()` and
    `RecordSavedElsewhere` (a one-line user error naming both places) is raised."""
    if isinstance(record.score, (int, float)) and not math.isfinite(record.score):
        raise ValueError(f"result record score is {'NaN' if record.score != record.score else record.score} "
                         f"({record.upstream} / {record.task} / {record.protocol})")
    d = record_dict(record)
    missing = [k for k in REQUIRED if d.get(k) in (None, "")]
    if missing:
        raise ValueError(f"result record lacks {', '.join(missing)}")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    name = f"{_slug(record.upstream)}__{_slug(record.protocol)}__{stamp}-{os.getpid()}-{secrets.token_hex(3)}.json"
    path = Path(results_dir) / RECORDS_DIR / _slug(record.task) / name
    try:
        atomic_write_json(path, d)
        return path
    except OSError as exc:
        failure = exc
    for base in fallback_records_dirs():
        spare = base / _slug(record.task) / name
        try:
            atomic_write_json(spare, d)
        except OSError:
            continue
        raise RecordSavedElsewhere(
            f"could not write the result record to {path.parent} ({failure.strerror or failure}); the finished "
            f"result was saved to {spare} - move it into {path.parent}/ once that is writable", spare)
    raise UserError(f"could not write the result record to {path.parent} ({failure.strerror or failure}) nor to "
                    f"{' or '.join(str(b) for b in fallback_records_dirs())}; the result was: {record.upstream} / "
                    f"{record.task} / {record.protocol} {record.metric} = {record.score}")


def _valid_score(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
        if not isinstance(rec, dict) or not all(k in rec for k in REQUIRED):
            missing = [k for k in REQUIRED if k not in rec] if isinstance(rec, dict) else "every field (not an object)"
            print(f"warning: skipping {p}: missing {missing}", file=sys.stderr)
            continue
        if not _valid_score(rec["score"]):
            print(f"warning: skipping {p}: score {rec['score']!r} is not a finite number", file=sys.stderr)
            continue
        rec["_path"] = str(p)
        out.append(rec)
    return out
