"""Result records and the leaderboard built from them."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import time

import pandas as pd
import pytest

from bench.results.leaderboard import leaderboard, write_csv
from bench.results.plots import heatmap, task_bars
from bench.results.records import ResultRecord, RunTimer, read_records, write_record


def _record(upstream="fbank", task="esc50", protocol="linear", score=50.0, **kw) -> ResultRecord:
    rec = ResultRecord(
        upstream=upstream, task=task, protocol=protocol, metric=kw.pop("metric", "accuracy"), score=score,
        dataset={"name": "esc50", "profile": "tiny", "manifest_sha256": "ab" * 32}, **kw,
    )
    return RunTimer().finish(rec)


def _writer(args):
    results, worker, n = args
    for i in range(n):
        write_record(_record(upstream=f"up{worker}", protocol=f"p{i}", score=float(i)), results)
    return n


def test_record_has_the_design_fields(tmp_path):
    path = write_record(_record(lr=1e-3, selection={"on": "validation", "grid": [1e-3, 1e-2]}), tmp_path)
    rec = json.loads(path.read_text())
    for key in ("upstream", "checkpoint_sha256", "task", "protocol", "metric", "score", "secondary", "split",
                "selection", "lr", "seed", "dataset", "package_version", "git_commit", "wall_time_s",
                "peak_memory_mb"):
        assert key in rec, key
    assert rec["peak_memory_mb"] > 0 and rec["created"]


def test_incomplete_record_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        write_record(_record(score=float("nan")), tmp_path)
    with pytest.raises(ValueError, match="lacks metric"):
        write_record(_record(metric=""), tmp_path)


def test_two_concurrent_writers(tmp_path):
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        assert sum(pool.map(_writer, [(str(tmp_path), 0, 25), (str(tmp_path), 1, 25)])) == 50
    recs = read_records(tmp_path)
    assert len(recs) == 50
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary leftovers
    df = leaderboard(tmp_path)
    assert len(df) == 50 and set(df["upstream"]) == {"up0", "up1"}


def test_leaderboard_keeps_latest_per_configuration_and_orders_by_direction(tmp_path):
    write_record(_record(upstream="a", score=10.0), tmp_path)
    time.sleep(1.1)  # records are ordered by their creation second
    write_record(_record(upstream="a", score=30.0), tmp_path)
    write_record(_record(upstream="b", score=20.0), tmp_path)
    write_record(_record(upstream="a", task="pr", protocol="weighted", metric="per", score=40.0,
                         higher_is_better=False), tmp_path)
    write_record(_record(upstream="b", task="pr", protocol="weighted", metric="per", score=20.0,
                         higher_is_better=False), tmp_path)
    (tmp_path / "records" / "esc50" / "broken.json").write_text("{not json")
    df = leaderboard(tmp_path)
    assert list(df.columns[:5]) == ["upstream", "task", "protocol", "metric", "score"]
    esc = df[df.task == "esc50"]
    assert esc["upstream"].tolist() == ["a", "b"] and esc["score"].tolist() == [30.0, 20.0]
    pr = df[df.task == "pr"]
    assert pr["upstream"].tolist() == ["b", "a"]  # lower PER first
    csv = write_csv(df, tmp_path / "lb.csv")
    assert csv.read_text().splitlines()[0].startswith("upstream,task,protocol,metric,score")
    back = pd.read_csv(csv)
    assert len(back) == 4
    png = heatmap(df, tmp_path / "lb.png")
    bars = task_bars(df, "esc50", tmp_path / "esc50.png")
    for p in (png, bars):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_cli_leaderboard(tmp_path):
    write_record(_record(upstream="fbank", score=12.5, secondary={"std": 1.5}), tmp_path)
    write_record(_record(upstream="random", score=22.5, secondary={"std": 2.0}), tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "leaderboard", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "22.5 ± 2.0" in proc.stdout
    assert (tmp_path / "leaderboard.csv").exists() and (tmp_path / "leaderboard.png").exists()
    empty = subprocess.run([sys.executable, "-m", "bench.cli", "leaderboard", "--results", str(tmp_path / "none")],
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and len(empty.stderr.strip().splitlines()) == 1
