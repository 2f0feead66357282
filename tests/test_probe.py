"""Learning probes (`upstreams/training/probe.py`, `upstreams/m2d/probe.py`, `train.probe_every`).

The metric tests run on constructed tensors; the run tests use the `tiny` preset on a synthetic
labelled corpus (seconds) and once through the CLI on the built `tiny` data profile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tone_corpus import write_tone_corpus
from upstreams.m2d.model import m2d_loss
from upstreams.training.log import read_log
from upstreams.training.probe import (constant_floor, knn_accuracy, nearest_visible, neighbour_floor, position_floor,
                                      rankme, standardise_targets)
from upstreams.training.run import pretrain

REPO = Path(__file__).resolve().parents[1]

FLOORS = ("probe/loss", "probe/floor_constant", "probe/floor_position", "probe/floor_neighbour", "probe/floor_margin")
RANKS = ("probe/rankme_online", "probe/rankme_target", "probe/rankme_online_tokens", "probe/rankme_target_tokens")


# -- RankMe ----------------------------------------------------------------------------------------
def test_rankme_of_rank_one_and_isotropic_matrices():
    gen = torch.Generator().manual_seed(0)
    u, v = torch.randn(500, 1, generator=gen), torch.randn(1, 64, generator=gen)
    assert rankme(u @ v) == pytest.approx(1.0, abs=0.01)  # eps 1e-7 on 64 values adds almost nothing
    d = 64
    iso = rankme(torch.randn(8192, d, generator=gen))
    assert 0.97 * d < iso <= d
    # a few directions only: the rank says how many
    low = torch.randn(4000, 5, generator=gen) @ torch.randn(5, d, generator=gen)
    assert 3.0 < rankme(low) < 5.01
    assert rankme(torch.randn(30, 100, generator=gen)) <= 30.0 + 1e-6  # bounded by min(N, D)


# -- floors ----------------------------------------------------------------------------------------
def _targets(b=16, m=12, d=24, num_positions=40, offset=3.0, seed=0):
    """Targets with a shared direction, a per-position offset and per-token noise."""
    gen = torch.Generator().manual_seed(seed)
    positions = torch.stack([torch.randperm(num_positions, generator=gen)[:m].sort().values for _ in range(b)])
    common = torch.randn(d, generator=gen)
    per_pos = torch.randn(num_positions, d, generator=gen)
    target = common + offset * per_pos[positions] + torch.randn(b, m, d, generator=gen)
    return target, positions


def test_constant_floor_is_the_loss_of_the_best_constant_predictor():
    target, _ = _targets()
    best = F.normalize(standardise_targets(target), dim=-1).reshape(-1, target.shape[-1]).mean(0)
    naive = float(m2d_loss(best.expand_as(target), target))  # the model's own loss function
    assert constant_floor(target) == pytest.approx(naive, abs=1e-5)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):  # and no other constant does better
        other = best + 0.3 * torch.randn(best.shape, generator=gen)
        assert float(m2d_loss(other.expand_as(target), target)) >= naive - 1e-6


def test_position_floor_uses_the_position_and_never_exceeds_the_constant_floor():
    target, positions = _targets(offset=3.0)
    const, pos = constant_floor(target), position_floor(target, positions, 40)
    assert pos < const - 0.2  # the offset is visible from the position alone
    flat, flat_pos = _targets(offset=0.0)
    assert position_floor(flat, flat_pos, 40) <= constant_floor(flat) + 1e-9
    # naive: predict each position's mean unit target
    unit = F.normalize(standardise_targets(target), dim=-1)
    means = torch.zeros(40, target.shape[-1]).index_add_(0, positions.reshape(-1), unit.reshape(-1, unit.shape[-1]))
    assert pos == pytest.approx(float(m2d_loss(means[positions], target)), abs=1e-5)


def test_nearest_visible_neighbour_in_time_same_row():
    grid = (2, 6)  # patch i is row i // 6, column i % 6
    ids_keep = torch.tensor([[1, 4, 11]])  # row 0: columns 1 and 4; row 1: column 5
    ids_mask = torch.tensor([[0, 2, 3, 5, 6, 7, 8, 9, 10]])
    near = torch.gather(ids_keep, 1, nearest_visible(ids_keep, ids_mask, grid))
    # column 2 -> 1 (distance 1), 3 -> 4, 5 -> 4; a tie would go to the earlier; row 1 has only patch 11
    assert near.tolist() == [[1, 1, 4, 4, 11, 11, 11, 11, 11]]
    no_row = torch.gather(torch.tensor([[2, 3]]), 1, nearest_visible(torch.tensor([[2, 3]]), torch.tensor([[8]]), grid))
    assert no_row.tolist() == [[2]]  # row 1 has nothing visible: nearest row, then nearest column


def test_neighbour_floor_is_zero_for_a_constant_row_and_matches_a_naive_copy():
    gen = torch.Generator().manual_seed(0)
    grid, d = (2, 8), 16
    source = torch.randn(3, 16, d, generator=gen)
    ids_keep = torch.stack([torch.randperm(16, generator=gen)[:6].sort().values for _ in range(3)])
    ids_mask = torch.stack([torch.tensor(sorted(set(range(16)) - set(k.tolist()))) for k in ids_keep])
    target = torch.gather(source, 1, ids_mask.unsqueeze(-1).expand(-1, -1, d))
    near = torch.gather(ids_keep, 1, nearest_visible(ids_keep, ids_mask, grid))
    copied = standardise_targets(torch.gather(source, 1, near.unsqueeze(-1).expand(-1, -1, d)))
    assert neighbour_floor(target, source, ids_keep, ids_mask, grid) == pytest.approx(float(m2d_loss(copied, target)), abs=1e-5)
    smooth = source[:, :1].expand(-1, 16, -1).contiguous()  # every patch the same: copying is perfect
    target = torch.gather(smooth, 1, ids_mask.unsqueeze(-1).expand(-1, -1, d))
    assert neighbour_floor(target, smooth, ids_keep, ids_mask, grid) == pytest.approx(0.0, abs=1e-5)


# -- kNN -------------------------------------------------------------------------------------------
def test_knn_accuracy_on_separable_clusters_and_shuffled_labels():
    gen = torch.Generator().manual_seed(0)
    classes, per = 4, 30
    centres = 10 * torch.randn(classes, 32, generator=gen)
    labels = torch.arange(classes).repeat_interleave(per)
    x = centres[labels] + torch.randn(classes * per, 32, generator=gen)
    assert knn_accuracy(x, labels) == 1.0
    assert knn_accuracy(x, [f"c{int(i)}" for i in labels]) == 1.0  # names work too
    shuffled = [knn_accuracy(x, labels[torch.randperm(len(labels), generator=gen)]) for _ in range(10)]
    assert abs(float(np.mean(shuffled)) - 1 / classes) < 0.08


# -- in a run --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def labelled_corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe-corpus")
    index = write_tone_corpus(root, label=lambda i: "low" if i % 6 < 3 else "high")
    return {"index": index, "cache": root / "cache"}


def _run(corpus, out, **train):
    overrides = {"data": {"index": str(corpus["index"]), "cache_dir": str(corpus["cache"])},
                 "train": {"threads": 1, "steps": 10, **train}}
    return pretrain("m2d", "tiny", out=str(out), overrides=overrides, log=lambda _m: None)


def test_probes_do_not_change_training_and_log_every_key(labelled_corpus, tmp_path):
    probed = _run(labelled_corpus, tmp_path / "probed", probe_every=4, log_every=3)  # lines of their own at 4, 8
    plain = _run(labelled_corpus, tmp_path / "plain")
    a = torch.load(probed.checkpoint, weights_only=True)["model"]
    b = torch.load(plain.checkpoint, weights_only=True)["model"]
    for k in b:
        assert torch.equal(a[k], b[k]), k  # probing draws nothing from the training's randomness
    rows = read_log(probed.log)
    probes = [r for r in rows if "probe/loss" in r]
    assert [r["step"] for r in probes] == [0, 4, 8, 10]  # step 0, every 4 steps, the end
    for r in probes:
        for key in (*FLOORS, *RANKS, "probe/knn_general", "probe/knn_general_step0", "probe/seconds"):
            assert key in r and np.isfinite(r[key]), (key, r)
        assert r["probe/floor_position"] <= r["probe/floor_constant"] + 1e-9
        assert 1.0 <= r["probe/rankme_online"] <= 64.0
    assert probes[0]["probe/knn_general"] == probes[0]["probe/knn_general_step0"]
    assert len({r["probe/knn_general_step0"] for r in probes}) == 1
    assert [r["step"] for r in rows if "loss" in r] == [3, 6, 9, 10]  # training lines as without probes
    assert [r["step"] for r in rows] == [0, 3, 4, 6, 8, 9, 10]  # step 10: one line with both
    assert "loss" in rows[-1]  # the last line is still the last training line (reproduce reads it)
    assert not any("probe/loss" in r for r in read_log(plain.log))


def test_resumed_run_keeps_the_step0_knn_reference(labelled_corpus, tmp_path):
    full = _run(labelled_corpus, tmp_path / "full", probe_every=4)
    out = tmp_path / "stopped"
    _run(labelled_corpus, out, probe_every=4, stop_after=6, checkpoint_every=3)
    resumed = pretrain("m2d", resume=True, out=str(out), log=lambda _m: None)
    ref = {r["step"]: r for r in read_log(full.log) if "probe/loss" in r}
    got = {r["step"]: r for r in read_log(resumed.log) if "probe/loss" in r}
    assert sorted(got) == [0, 4, 6, 8, 10]  # 6: the end of the stopped run
    for step in (0, 4, 8, 10):
        assert got[step]["probe/knn_general_step0"] == ref[0]["probe/knn_general"]
        for key in FLOORS:
            assert got[step][key] == pytest.approx(ref[step][key], abs=1e-5), (step, key)


def test_cli_tiny_run_logs_probe_keys_and_tensorboard_events(tiny_root, tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "BENCH_DATA": str(tiny_root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "pretrain", "m2d", "--config", "tiny", "--out", str(out),
                           "--set", "train.probe_every=5", "--set", "train.steps=10", "--set", "train.threads=1"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "probe every 5 steps" in proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    probes = [r for r in rows if "probe/loss" in r]
    assert [r["step"] for r in probes] == [0, 5, 10]
    # the tiny profile's unlabelled general corpus: kNN on the built ESC-50 clips
    # (its Speech Commands validation list has one clip per word, too few for a neighbour)
    keys = {*FLOORS, *RANKS, "probe/knn_esc50", "probe/knn_esc50_step0", "probe/seconds"}
    for r in probes:
        assert keys <= set(r), keys - set(r)
    events = list((out / "tb").glob("events.out.tfevents.*"))
    assert events and b"probe/floor_neighbour" in events[0].read_bytes() and b"probe/knn_esc50" in events[0].read_bytes()
    assert (out / "loss.png").stat().st_size > 0
