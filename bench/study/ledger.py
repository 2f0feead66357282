"""The ledger: one line per invocation that ran stages into a study's folder (`invocations.jsonl`).

Stage times alone overstate the wall time when stages ran side by side, so every invocation appends
its elapsed seconds, executor and job count; a resumed study or a re-render still reports the real
elapsed time. Only the parent writes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from upstreams.fileio import dumps_strict

from .stage import DATA_UNCHANGED, StageResult

__all__ = ["INVOCATIONS", "log_invocation", "wall_time", "fmt_seconds"]

INVOCATIONS = "invocations.jsonl"  # one line per `bench reproduce` / `bench sweep` that ran stages here


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min {s % 60:02d} s" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def log_invocation(out: Path, command: str, seconds: float, jobs: int, results: list[StageResult],
                   executor: str = "local") -> None:
    """Append this invocation's elapsed time, so a re-render (or a resumed run) still knows the real wall
    time; stage times alone overstate it when stages ran side by side (`--jobs`)."""
    ran = [r.name for r in results if r.status in ("done", "failed") and r.note != DATA_UNCHANGED]
    if not ran:
        return
    from ..results.records import git_commit

    entry = {"command": command, "seconds": round(seconds, 1), "jobs": jobs, "executor": executor,
             "stages_run": len(ran),
             "git_commit": git_commit(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / INVOCATIONS, "a") as fh:  # one short write per line: a crash leaves whole lines
        fh.write(dumps_strict(entry, indent=None) + "\n")


def _read_invocations(out: Path) -> list[dict]:
    try:
        lines = (out / INVOCATIONS).read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash
    return entries


def wall_time(out: Path, summed: float, invocation_seconds: float) -> str:
    entries = _read_invocations(out)
    if not entries:
        return f"{fmt_seconds(summed)} summed over stages (this invocation: {fmt_seconds(invocation_seconds)})"
    elapsed = sum(float(e.get("seconds", 0.0)) for e in entries)
    jobs = sorted({int(e.get("jobs", 1)) for e in entries})
    n = len(entries)
    return (f"{fmt_seconds(elapsed)} elapsed over the {n} invocation{'s' * (n > 1)} that ran stages into this "
            f"directory (--jobs {'/'.join(map(str, jobs))}; `{INVOCATIONS}`); stage times summed: {fmt_seconds(summed)}")
