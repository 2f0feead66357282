"""A study's tables, plots and report, rendered from the records its stages point at.

Writes under the study folder: leaderboard.csv/.png, tasks/<task>.csv, plots/<task>.png, report.md
(claims, stage times, command, commit, wall time from the ledger), index.html and stages.csv.
"""

from __future__ import annotations

import os
import platform
from collections import Counter
from pathlib import Path

from upstreams.fileio import atomic_write_text

from ..errors import UserError
from .ledger import wall_time
from .stage import Stage, StageResult

__all__ = ["render", "REPRODUCTION_NOTES"]


def render(rep, stages: list[Stage], command: str, invocation_seconds: float,
           left_out: list[str] = (), notes: list[str] | None = None) -> dict[str, Path]:
    """Leaderboard CSV, per-task CSVs, heatmap, per-task bars and the report, from this run's records.

    `rep` is the `bench.study.study.Study` that ran the stages; `notes` replace the built-in
    reproduction's notes (a sweep states its own)."""
    import pandas as pd

    from ..results.leaderboard import leaderboard, pool_seeds, write_csv
    from ..results.plots import heatmap, task_bars
    from ..results.records import git_commit
    from ..results.report import render_report

    out = rep.out
    # only the records this reproduction's stages point at (re-runs leave older records behind)
    wanted = {(out / r.outputs["record"]).resolve() for r in rep.results.values() if r.outputs.get("record")}
    df = leaderboard(out)
    if not df.empty:
        df = df[[Path(p).resolve() in wanted for p in df["record"]]].reset_index(drop=True)
    written: dict[str, Path] = {}
    if df.empty:
        raise UserError(f"no evaluation finished under {out}; see the stage log above")
    df = pool_seeds(df)  # one row per upstream x task x protocol: the seeds' checkpoints and heads together
    df = df.assign(record=[";".join(str(Path(p).resolve().relative_to(out)) for p in str(r).split(";"))
                           for r in df["record"]])
    written["leaderboard.csv"] = write_csv(df, out / "leaderboard.csv")
    written["leaderboard.png"] = heatmap(df, out / "leaderboard.png", title=f"bench reproduce ({rep.profile})")
    for task, sub in df.groupby("task"):
        written[f"tasks/{task}.csv"] = write_csv(sub, out / "tasks" / f"{task}.csv")
        written[f"plots/{task}.png"] = task_bars(df, task, out / "plots" / f"{task}.png")
    results = [rep.results[s.name] for s in stages if s.name in rep.results]
    total = sum(r.seconds for r in results)
    meta = {
        "command": command,
        "git_commit": git_commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {_device_name()}, Python {platform.python_version()}",
        "wall_time": wall_time(out, total, invocation_seconds),
        "profile": rep.profile,
        "manifests": ", ".join(f"{k} {v[:12]}" for k, v in
                               rep.results.get("data", StageResult("data", "", 0, {})).outputs.get("manifests", {}).items()),
        "stages": [{"name": r.name, "status": r.status, "seconds": r.seconds, "note": _stage_note(r)} for r in results],
        "notes": (_notes(rep, left_out) if notes is None else notes + _run_notes(rep)) + _commit_note(df["git_commit"]),
    }
    written["report.md"] = Path(atomic_write_text(out / "report.md", render_report(df, meta)))
    from ..results.html_report import write_html  # the same tables and claims as one static page, with the records
    from ..results.records import read_records
    written["index.html"] = write_html(df, read_records(out), out, title=f"bench reproduce ({rep.profile})")
    pd.DataFrame([{"stage": r.name, "status": r.status, "seconds": round(r.seconds, 1), "note": _stage_note(r)}
                  for r in results]).to_csv(out / "stages.csv", index=False)
    written["stages.csv"] = out / "stages.csv"
    return written


def _commit_note(commits) -> list[str]:
    """Name the code versions behind the tables when a resumed reproduction spans several commits."""
    counts = Counter(str(c or "unknown")[:12] for c in commits)
    if len(counts) < 2:
        return []
    parts = ", ".join(f"{c} ({n})" for c, n in counts.most_common())
    return [f"The records come from {len(counts)} code versions (commit: records): {parts}. A finished stage is "
            "not re-run when the code changes (use `--force`); each record names its commit and settings."]


def _stage_note(r: StageResult) -> str:
    parts = [r.note] if r.note else []
    o = r.outputs
    if "step" in o:
        parts.append(f"{o['step']}/{o['total_steps']} steps, final loss {o.get('final_loss'):.4f}"
                     if o.get("final_loss") is not None else f"{o['step']}/{o['total_steps']} steps")
    if "score" in o:
        parts.append(f"{o['metric']} {o['score']:.4g}")
    return "; ".join(parts)


def _notes(rep, left_out: list[str] = ()) -> list[str]:
    return REPRODUCTION_NOTES + _run_notes(rep, left_out)


REPRODUCTION_NOTES = [
    "Pretraining and evaluation ran on CPU; times are wall-clock seconds of each stage when it ran "
    "(a stage skipped on a later invocation keeps the time of the run that produced it).",
    "Fine-tuning (`finetune`) on the mini-benchmark uses one learning rate (3e-3 for the head, x0.1 for the "
    "upstream), 3 epochs, bf16 autocast and, for ESC-50, fold 1 only, to fit the CPU budget; frozen protocols sweep the default grid "
    "and ESC-50 frozen scores are the mean over its 5 folds (error bars: std over folds).",
    "`fbank` has no weights, so it has no fine-tuning row.",
    "Pretraining runs the `mini` presets as they are (bench/study/plans.py PRETRAIN_OVERRIDES): m2d `mini` "
    "(1000 steps, 16x16 patches, the recipe study's choice for clip tasks), m2d `mini_speech` (1000 steps, 80x4 "
    "patches: 40 ms frames), m2dx `mini_respiratory` (600, from the `mini` run), score `mini` (200, from the "
    "`mini_speech` run); each run's resolved config is in its checkpoint.",
    "On ASR, PR and QbE, `m2d` is the `mini_speech` run and `random` its step-0 twin (SCORE's claim compares "
    "SCORE with its own base); on the clip tasks they are the `mini` run and its twin.",
]


def _run_notes(rep, left_out: list[str] = ()) -> list[str]:
    """What this invocation left out, failed or did not run (any plan)."""
    notes = []
    if left_out:
        notes.append(f"This invocation was restricted (--upstreams/--tasks/--protocols); not part of it, so not "
                     f"in the tables: {', '.join(left_out)}.")
    failed = [r for r in rep.results.values() if r.status == "failed"]
    notes += [f"Stage {r.name} failed: {r.note}" for r in failed]
    unfinished = [r.name for r in rep.results.values() if r.status == "not run"]
    if unfinished:
        notes.append(f"Rendered with --render-only: {len(unfinished)} planned stage(s) have no finished output yet and "
                     f"are missing from the tables: {', '.join(unfinished)}. `bench reproduce` (same options) runs them.")
    return notes


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
