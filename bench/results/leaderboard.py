"""Aggregate result records into one leaderboard table (pandas).

One row per (upstream, checkpoint, options, task, protocol, dataset, folds, seeds, run options): the most
recent record of that combination wins, so re-running a configuration replaces its row while different
checkpoints, datasets (tiny vs mini vs a real corpus), fold subsets, seed sets or any other option that
changes the score (`run_options`: the layer, task options such as `--classes` or the decoder, the head's
layer normalisation or QbE position removal, the lr grid, the training budget, fine-tuning settings,
precision) stay apart. A record the table cannot use (a score that is not a number) is skipped with one
warning line. Columns
start with `upstream,task,protocol,metric,score` (the contract other tools read), then the seed
statistics `n_seeds,score_std,ci95_low,ci95_high` (`bench.results.stats`: std over seeds; t-interval over the
seed x fold units, `ci_method` says over how many). `pool_seeds` merges rows that differ only in
the pretraining seed behind them (one checkpoint per seed in `bench reproduce --seeds N`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from upstreams.fileio import atomic_path

from .records import read_records
from .stats import Unit, summarise_units, units_from

__all__ = ["COLUMNS", "leaderboard", "write_csv", "record_units", "pool_seeds"]

COLUMNS = [
    "upstream", "task", "protocol", "metric", "score", "n_seeds", "score_std", "ci95_low", "ci95_high", "ci_method",
    "std", "higher_is_better", "split",
    "dataset", "profile", "manifest_sha256", "checkpoint_sha256", "upstream_options", "lr", "seed", "seeds", "folds",
    "run_options", "selected_on", "wall_time_s", "peak_memory_mb", "git_commit", "created", "record",
]
_KEY = ["upstream", "checkpoint_sha256", "upstream_options", "task", "protocol", "manifest_sha256", "folds", "seeds",
        "run_options"]


def run_options(rec: dict) -> dict:
    """The options of a run, besides the upstream's, that change its score, read from what the record
    says was done (so records written before this column existed get theirs too)."""
    det = rec.get("details") or {}
    out: dict = {}
    layer = det.get("layer")
    if isinstance(layer, int) and not isinstance(layer, bool):
        n = (det.get("upstream") or {}).get("num_layers")
        out["layer"] = layer % n if isinstance(n, int) and n > 0 else layer  # -1 and n-1 are one layer
    elif layer is not None and layer != "weighted":
        out["layer"] = layer
    if det.get("classes"):  # clip tasks: the label set (speech_commands --classes superb12 | all35)
        out["classes"] = len(det["classes"])
    for key in ("decoder", "normalize_layers", "upstream_lr_scale", "time_mask", "freq_mask", "precision"):
        if det.get(key) is not None:
            out[key] = det[key]
    removal = ((det.get("scoring") or {}).get("position_removal") or {})
    if isinstance(removal, dict) and removal.get("enabled") is not None:
        out["position_removal"] = bool(removal["enabled"])
    if det.get("budget"):
        out["budget"] = det["budget"]
    grid = (rec.get("selection") or {}).get("grid") or []
    lrs = [g["lr"] for g in grid if isinstance(g, dict) and g.get("lr") is not None]
    if lrs:
        out["lr_grid"] = sorted(lrs)
    return out


def record_units(rec: dict) -> list[Unit]:
    """The record's (seed, fold) units; records written before seeds existed give theirs from the folds."""
    sec = rec.get("secondary") or {}
    if sec.get("units"):
        return [Unit.from_dict(u) for u in sec["units"]]
    return units_from(int(rec.get("seed") or 0), rec["score"], sec, (rec.get("details") or {}).get("per_fold"))


def _stats_columns(units: list[Unit]) -> dict:
    s = summarise_units(units)
    nan = lambda v: None if v != v else v  # noqa: E731
    return {"n_seeds": s.n_seeds, "score_std": nan(s.score_std), "ci95_low": nan(s.ci95_low),
            "ci95_high": nan(s.ci95_high), "ci_method": s.method}


def _row(rec: dict) -> dict:
    ds = rec.get("dataset") or {}
    sec = rec.get("secondary") or {}
    units = record_units(rec)
    folds = sorted({u.fold for u in units})
    return {
        "upstream": rec["upstream"],
        "task": rec["task"],
        "protocol": rec["protocol"],
        "metric": rec["metric"],
        "score": float(rec["score"]),
        **_stats_columns(units),
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
        "folds": " ".join(folds),
        "seeds": " ".join(str(s) for s in sorted({u.seed for u in units})),
        "run_options": json.dumps(run_options(rec), sort_keys=True, default=str),
        "units": units,
    }


def leaderboard(results_dir: str | Path, profile: str | None = None) -> pd.DataFrame:
    """The leaderboard of `results_dir` (optionally one data profile), sorted by task, protocol, score."""
    rows = []
    for rec in read_records(results_dir):
        try:
            rows.append(_row(rec))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a record edited or broken by hand
            print(f"warning: skipping {rec.get('_path', 'a record')}: unusable for the leaderboard "
                  f"({type(exc).__name__}: {exc})", file=sys.stderr)
    df = pd.DataFrame(rows, columns=COLUMNS + ["units"])
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


def pool_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (upstream, task, protocol, dataset) from rows that differ only in the checkpoint or
    options their seed gave them (a pretraining run per seed, the step-0 twin of each): units are
    concatenated and the statistics recomputed. Checkpoints and records are listed, `;`-separated."""
    if df.empty:
        return df
    out = []
    by = ["upstream", "task", "protocol", "manifest_sha256", "folds"] + (["run_options"] if "run_options" in df else [])
    for _, g in df.groupby(by, sort=False):
        if len(g) == 1:
            out.append(g.iloc[0].to_dict())
            continue
        units = [u for us in g["units"] for u in us]
        seeds = sorted({u.seed for u in units})
        if len(seeds) * len({u.fold for u in units}) != len(units):
            raise ValueError(f"cannot pool {g.iloc[0]['upstream']} / {g.iloc[0]['task']} / {g.iloc[0]['protocol']}: "
                             f"two rows share a seed ({', '.join(g['seeds'])})")
        row = g.iloc[0].to_dict()
        stds = [float(x) for x in g["std"] if x is not None and x == x]
        row.update(**_stats_columns(units), score=summarise_units(units).score, units=units,
                   seeds=" ".join(map(str, seeds)), seed=None, lr=None,
                   std=sum(stds) / len(stds) if stds else None,
                   checkpoint_sha256=";".join(str(c) for c in g["checkpoint_sha256"] if c),
                   upstream_options=";".join(g["upstream_options"]), record=";".join(map(str, g["record"])),
                   wall_time_s=float(sum(g["wall_time_s"])),
                   git_commit=";".join(sorted({str(c) for c in g["git_commit"]})),
                   created=max(g["created"]))
        out.append(row)
    pooled = pd.DataFrame(out, columns=df.columns)
    pooled = pooled.assign(_rank=pooled["score"].where(pooled["higher_is_better"], -pooled["score"]))
    pooled = pooled.sort_values(["task", "protocol", "_rank"], ascending=[True, True, False]).drop(columns="_rank")
    return pooled.reset_index(drop=True)


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path, suffix=".csv") as tmp:
        df[[c for c in COLUMNS if c in df.columns]].to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)
