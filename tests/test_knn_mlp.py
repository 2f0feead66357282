"""`knn` (X-ARES) and `mlp` (HEAR 2021) clip protocols: kNN against scikit-learn, HEAR's grid draw, valid records
on the tiny profile, and one cache entry shared with the linear protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.protocols.knn_mlp import GRID_SEED, KNN_KS, MLP_GRID, knn_predict, mlp_grid
from bench.run import UNTRAINED_PROTOCOLS, RunRequest, run
from tiny_requests import tiny_request
from tasks.heads import MLPHead



def _req(tiny_root, tmp_path, **kw) -> RunRequest:
    return tiny_request(tiny_root, tmp_path, **kw)


# -- kNN against scikit-learn ----------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [2, 5])
def test_knn_equals_sklearn_cosine_knn(num_classes):
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    train_x, query_x = rng.normal(size=(80, 16)), rng.normal(size=(60, 16))
    train_y = rng.integers(0, num_classes, size=80)
    ks = (1, 3, 5, 10, 20)
    ours = knn_predict(train_x, train_y, query_x, ks, num_classes)
    ties = 0
    for k in ks:
        ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(train_x, train_y)
        _, idx = ref.kneighbors(query_x)  # most similar first
        votes = ref.predict_proba(query_x)
        tied = votes == votes.max(1, keepdims=True)
        # sklearn breaks a class tie by the lowest label; ours by the most similar neighbour of a tied class
        expected = ref.predict(query_x).copy()
        for q in np.flatnonzero(tied.sum(1) > 1):
            expected[q] = next(train_y[i] for i in idx[q] if tied[q, train_y[i]])
            ties += 1
        np.testing.assert_array_equal(ours[k], expected)
        untied = tied.sum(1) == 1
        assert untied.sum() >= len(query_x) // 3
        np.testing.assert_array_equal(ours[k][untied], ref.predict(query_x)[untied])
    if num_classes == 2:  # odd k cannot tie between two classes
        assert all((ours[k] == KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
                    .fit(train_x, train_y).predict(query_x)).all() for k in ks if k % 2)
    else:
        assert ties > 0  # the tie-break was exercised


def test_knn_is_scale_invariant_per_example_and_rejects_k_above_train_size():
    rng = np.random.default_rng(1)
    train_x, query_x, train_y = rng.normal(size=(30, 8)), rng.normal(size=(10, 8)), rng.integers(0, 3, 30)
    a = knn_predict(train_x, train_y, query_x, (1, 5), 3)
    b = knn_predict(train_x * rng.uniform(0.1, 10, size=(30, 1)), train_y, query_x * 7.0, (1, 5), 3)
    assert all((a[k] == b[k]).all() for k in (1, 5))
    with pytest.raises(ValueError, match="exceeds"):
        knn_predict(train_x, train_y, query_x, (31,), 3)


# -- HEAR's MLP grid and head ----------------------------------------------------------------------

def test_mlp_grid_draws_8_of_hears_16_points():
    points, full = mlp_grid()
    assert full == 16 and len(points) == 8
    grid = [dict(hidden_layers=h, init=i, lr=lr) for h in MLP_GRID["hidden_layers"] for i in MLP_GRID["init"]
            for lr in MLP_GRID["lr"]]
    assert len(grid) == 16 and all(p in grid for p in points) and len({tuple(p.values()) for p in points}) == 8
    assert mlp_grid() == (points, full)  # fixed draw, whatever the head seed
    assert GRID_SEED == 42
    # a --lr grid replaces the lr axis; a grid of 8 points or fewer is trained whole
    few, n = mlp_grid([1e-3])
    assert n == 4 and len(few) == 4 and {p["lr"] for p in few} == {1e-3}


def test_mlp_head_shapes_and_hear_layout():
    torch.manual_seed(0)
    head = MLPHead(12, 5, hidden_layers=2, hidden_dim=32, dropout=0.1, init="xavier_normal")
    kinds = [type(m).__name__ for m in head.hidden]
    assert kinds == ["Linear", "BatchNorm1d", "Dropout", "ReLU"] * 2
    assert head.hidden[2].p == 0.1
    assert head(torch.randn(4, 3, 12)).shape == (4, 5) and head(torch.randn(4, 12)).shape == (4, 5)
    with pytest.raises(ValueError, match="init must be"):
        MLPHead(12, 5, init="kaiming")


# -- end to end on tiny --------------------------------------------------------------------------------

def test_knn_record_on_tiny_shares_the_linear_cache_entry_and_runs_once(tiny_root, tmp_path):
    linear, _ = run(_req(tiny_root, tmp_path, task="esc50", protocol="linear"))
    knn, path = run(_req(tiny_root, tmp_path, task="esc50", protocol="knn", seeds=[0, 1, 2]))
    assert linear.details["cache"]["hit"] is False
    assert knn.details["cache"]["hit"] is True and knn.details["cache"]["key"] == linear.details["cache"]["key"]
    rec = json.loads(path.read_text())
    assert rec["protocol"] == "knn" and rec["lr"] is None and 0.0 <= rec["score"] <= 100.0
    assert "knn" in UNTRAINED_PROTOCOLS and rec["seeds"] == [0]  # deterministic: --seeds runs it once
    sel = rec["selection"]
    assert sel["on"] == "validation" and sel["test_used_for_selection"] is False
    n_train = min(rec["details"]["n_train"])
    assert [g["k"] for g in sel["grid"]] == [k for k in KNN_KS if k <= n_train]
    best = max(sel["grid"], key=lambda g: g["val_mean"])
    assert sel["chosen"] == {"k": best["k"]} and rec["details"]["k"] == best["k"]
    assert rec["secondary"]["val_score"] == best["val_mean"]
    folds = rec["details"]["per_fold"]
    assert [f["fold"] for f in folds] == [f"fold{i}" for i in range(1, 6)] and all(f["k"] == best["k"] for f in folds)
    assert rec["score"] == pytest.approx(np.mean([f["test"] for f in folds]), abs=1e-3)
    assert [f["val"] for f in folds] == best["val_per_fold"]
    assert rec["details"]["standardized"] is False and rec["details"]["deterministic"] is True
    again, _ = run(_req(tiny_root, tmp_path, task="esc50", protocol="knn", seed=5))
    assert again.score == knn.score  # no randomness at all


def test_mlp_record_on_tiny_picks_the_best_of_8_sampled_points(tiny_root, tmp_path):
    first, _ = run(_req(tiny_root, tmp_path, task="icbhi", protocol="linear", lrs=[1e-3]))
    record, path = run(_req(tiny_root, tmp_path, task="icbhi", protocol="mlp"))
    assert record.details["cache"]["hit"] is True and record.details["cache"]["key"] == first.details["cache"]["key"]
    rec = json.loads(path.read_text())
    assert rec["protocol"] == "mlp" and rec["task"] == "icbhi" and 0.0 <= rec["score"] <= 100.0
    assert rec["score"] == pytest.approx((rec["secondary"]["se"] + rec["secondary"]["sp"]) / 2)
    sel = rec["selection"]
    assert sel["on"] == "validation" and sel["test_used_for_selection"] is False
    assert sel["grid_full_size"] == 16 and sel["grid_sampled"] == 8 and len(sel["grid"]) == 8
    drawn, _ = mlp_grid()
    assert [{k: g[k] for k in ("hidden_layers", "init", "lr")} for g in sel["grid"]] == drawn
    best = max(sel["grid"], key=lambda g: g["val_mean"])
    assert sel["chosen"] == {k: best[k] for k in ("hidden_layers", "init", "lr")} and rec["lr"] == best["lr"]
    assert rec["secondary"]["val_score"] == best["val_mean"] == max(g["val_mean"] for g in sel["grid"])
    fold = rec["details"]["per_fold"][0]
    assert {"fold", "test", "val", "best_epoch", "epochs_run"} <= set(fold) and fold["val"] == best["val_per_fold"][0]
