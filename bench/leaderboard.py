"""Aggregate result records into one leaderboard table (pandas).

One row per (upstream, checkpoint, options, task, protocol, dataset): the most recent record of
that combination wins, so re-running a configuration replaces its row while different checkpoints
or datasets (tiny vs mini vs a real corpus) stay apart. Columns start with
`upstream,task,protocol,metric,score` (the contract other tools read).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from upstreams.fileio import atomic_path

from .records import read_records

__all__ = ["COLUMNS", "leaderboard", "write_csv"]

COLUMNS = [
    "upstream", "task", "protocol", "metric", "score", "std", "higher_is_better", "split",
    "dataset", "profile", "manifest_sha256", "checkpoint_sha256", "upstream_options", "lr", "seed",
    "selected_on", "wall_time_s", "peak_memory_mb", "git_commit", "created", "record",
]
_KEY = ["upstream", "checkpoint_sha256", "upstream_options", "task", "protocol", "manifest_sha256"]


def _row(rec: dict) -> dict:
    ds = rec.get("dataset") or {}
    sec = rec.get("secondary") or {}
    return {
        "upstream": rec["upstream"],
        "task": rec["task"],
        "protocol": rec["protocol"],
        "metric": rec["metric"],
        "score": float(rec["score"]),
        "std": sec.get("std"),
        "higher_is_better": bool(rec.get("higher_is_better", True)),
        "split": rec.get("split", ""),
        "dataset": ds.get("name", ""),
        "profile": ds.get("profile", ""),
        "manifest_sha256": (ds.get("manifest_sha256") or "")[:16],
        "checkpoint_sha256": (rec.get("checkpoint_sha256") or "")[:16],
        "upstream_options": json.dumps(rec.get("upstream_options") or {}, sort_keys=True),
        "lr": rec.get("lr"),
        "seed": rec.get("seed"),
        "selected_on": (rec.get("selection") or {}).get("on", ""),
        "wall_time_s": rec.get("wall_time_s"),
        "peak_memory_mb": rec.get("peak_memory_mb"),
        "git_commit": rec.get("git_commit", ""),
        "created": rec.get("created", ""),
        "record": rec.get("_path", ""),
    }


def leaderboard(results_dir: str | Path, profile: str | None = None) -> pd.DataFrame:
    """The leaderboard of `results_dir` (optionally one data profile), sorted by task, protocol, score."""
    rows = [_row(r) for r in read_records(results_dir)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    if df.empty:
        return df
    if profile:
        df = df[df["profile"] == profile]
    # newest record per key wins; records created in the same second are ordered by file name so the choice
    # is the same on every call
    df = df.sort_values(["created", "record"], kind="stable").drop_duplicates(_KEY, keep="last")
    # best first within each task/protocol, respecting the metric's direction
    df = df.assign(_rank=df["score"].where(df["higher_is_better"], -df["score"]))
    df = df.sort_values(["task", "protocol", "_rank"], ascending=[True, True, False]).drop(columns="_rank")
    return df.reset_index(drop=True)


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)
