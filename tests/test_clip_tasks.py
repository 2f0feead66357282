"""Clip tasks end to end on the tiny profile: every task x protocol, metrics, cache, determinism, bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bench.cache import EmbeddingCache
from bench.protocols.clip_heads import DEFAULT_LRS
from bench.results.records import read_records
from bench.run import RunRequest, run
from tiny_requests import tiny_request
from tasks.audio import AudioReadError
from tasks.heads import WeightedLayerHead
from tasks.metrics.classification import accuracy, icbhi_scores

CLIP_TASKS = ["esc50", "speech_commands", "icbhi"]


def _req(tiny_root, tmp_path, **kw) -> RunRequest:
    return tiny_request(tiny_root, tmp_path, **kw)


# -- metrics against hand-computed values --------------------------------------------------------

def test_accuracy_by_hand():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2])["score"] == pytest.approx(75.0)


def test_icbhi_score_by_hand():
    # classes: 0 normal, 1 crackle, 2 wheeze, 3 both
    y_true = [0, 0, 0, 0, 1, 1, 2, 3, 3, 3]
    y_pred = [0, 0, 1, 0, 1, 3, 2, 3, 1, 0]
    # Sp = 3 of 4 normal cycles correct = 75 %; Se = crackle 1/2 + wheeze 1/1 + both 1/3 = 3 of 6 = 50 %
    m = icbhi_scores(y_true, y_pred)
    assert m["sp"] == pytest.approx(75.0) and m["se"] == pytest.approx(50.0)
    assert m["score"] == pytest.approx(62.5)
    with pytest.raises(ValueError, match="both normal and abnormal"):
        icbhi_scores([0, 0], [0, 0])


def test_weighted_head_on_pooled_features_equals_s3prl_head_on_frames():
    """SUPERB KS head (s3prl Featurizer -> projector -> UtteranceLevel) is exact on time-pooled layers."""
    from upstreams import s3prl_compat

    s3prl_compat.patch()
    from s3prl.downstream.model import UtteranceLevel

    torch.manual_seed(0)
    layers, dim, classes = 4, 6, 3
    frames = [torch.randn(t, layers, dim) for t in (7, 3, 11)]
    ours = WeightedLayerHead(layers, dim, classes, projector_dim=5)
    with torch.no_grad():
        ours.weights.copy_(torch.randn(layers))
    ref = UtteranceLevel(input_dim=5, output_dim=classes, pooling="MeanPooling")
    with torch.no_grad():
        ref.post_net.linear.weight.copy_(ours.linear.weight)
        ref.post_net.linear.bias.copy_(ours.linear.bias)
        # s3prl: softmax-weighted sum of layers per frame, projector per frame, then mean over valid frames
        w = torch.softmax(ours.weights, 0)
        padded = torch.nn.utils.rnn.pad_sequence([(f * w[:, None]).sum(1) for f in frames], batch_first=True)
        lens = torch.tensor([len(f) for f in frames])
        expected, _ = ref(ours.projector(padded), lens)
        pooled = torch.stack([f.mean(0) for f in frames])
        torch.testing.assert_close(ours(pooled), expected, atol=1e-5, rtol=1e-5)


# -- every task x protocol on tiny --------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("task", CLIP_TASKS)
@pytest.mark.parametrize("protocol", ["linear", "weighted", "finetune"])
def test_task_protocol_writes_valid_record(tiny_root, tmp_path, task, protocol):
    # fine-tuning is the slow one: one lr (the grid is tested below) and, for ESC-50, two of the five folds
    lrs = [1e-3] if protocol == "finetune" else None
    folds = ["fold1", "fold2"] if protocol == "finetune" and task == "esc50" else None
    record, path = run(_req(tiny_root, tmp_path, task=task, protocol=protocol, lrs=lrs, folds=folds))
    rec = json.loads(path.read_text())
    assert rec["task"] == task and rec["protocol"] == protocol and rec["upstream"] == "random"
    assert 0.0 <= rec["score"] <= 100.0
    assert rec["selection"]["on"] == "validation" and rec["selection"]["test_used_for_selection"] is False
    assert rec["dataset"]["manifest_sha256"] and rec["dataset"]["profile"] == "tiny"
    assert rec["wall_time_s"] > 0 and rec["peak_memory_mb"] > 0
    if task == "icbhi":
        assert {"se", "sp"} <= set(rec["secondary"])
        assert rec["score"] == pytest.approx((rec["secondary"]["se"] + rec["secondary"]["sp"]) / 2)
        assert "training patients" in rec["selection"]["notes"]["validation"]
    if task == "esc50":
        assert rec["secondary"]["folds"] == len(rec["details"]["per_fold"]) == (2 if folds else 5)
        assert rec["secondary"]["std"] is not None
    if protocol == "weighted":
        w = rec["details"]["layer_weights"]
        assert len(w) == 3 and sum(w) == pytest.approx(1.0, abs=1e-3)  # tiny arch: depth 2 -> 3 hidden states


def test_lr_grid_is_swept_and_listed(tiny_root, tmp_path):
    record, _ = run(_req(tiny_root, tmp_path, task="icbhi", protocol="linear"))
    grid = record.selection["grid"]
    assert [g["lr"] for g in grid] == list(DEFAULT_LRS["linear"]) and len(grid) >= 3
    best = max(grid, key=lambda g: g["val_mean"])
    assert record.lr == best["lr"] and record.secondary["val_score"] == best["val_mean"]


def test_same_seed_same_score_and_cache_hit(tiny_root, tmp_path):
    first, _ = run(_req(tiny_root, tmp_path, task="esc50", protocol="linear"))
    second, _ = run(_req(tiny_root, tmp_path, task="esc50", protocol="weighted"))
    third, _ = run(_req(tiny_root, tmp_path, task="esc50", protocol="linear"))
    assert first.details["cache"]["hit"] is False
    assert second.details["cache"]["hit"] is True  # one extraction serves both frozen protocols
    assert third.details["cache"]["hit"] is True and third.details["cache"]["key"] == first.details["cache"]["key"]
    assert third.score == first.score and third.lr == first.lr
    # a fresh cache (re-extraction) gives the same score too
    fresh, _ = run(_req(tiny_root, tmp_path, task="esc50", protocol="linear", cache_root=str(tmp_path / "cache2")))
    assert fresh.details["cache"]["hit"] is False and fresh.score == first.score
    # any key change is a miss: another upstream seed, or bf16 extraction
    other, _ = run(_req(tiny_root, tmp_path, task="esc50", protocol="linear",
                        upstream_options={"arch": "tiny", "seed": 1}))
    assert other.details["cache"]["hit"] is False
    assert len(EmbeddingCache(tmp_path / "cache").entries()) == 2


def test_interrupted_extraction_leaves_no_entry_and_no_record(tiny_root, tmp_path, monkeypatch):
    import bench.protocols.clip as runner

    real = runner.extract_to

    def dies_after_first_batch(*args, **kwargs):
        def boom(batch):
            raise KeyboardInterrupt

        return real(*args, **{**kwargs, "on_batch": boom})

    monkeypatch.setattr(runner, "extract_to", dies_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        run(_req(tiny_root, tmp_path, task="icbhi", protocol="linear"))
    assert EmbeddingCache(tmp_path / "cache").entries() == []
    assert read_records(tmp_path / "results") == []


def test_corrupt_clip_is_named_or_skipped(tiny_root, tmp_path):
    src = tiny_root / "tiny" / "esc50"
    root = tmp_path / "data"
    shutil.copytree(src, root / "tiny" / "esc50")
    victim = sorted((root / "tiny" / "esc50" / "ESC-50-master" / "audio").glob("*.wav"))[3]
    victim.write_bytes(victim.read_bytes()[:30])  # truncated inside the header
    with pytest.raises(AudioReadError, match=victim.name):
        run(_req(root, tmp_path, task="esc50", protocol="linear", dataset=str(root / "tiny" / "esc50")))
    record, _ = run(_req(root, tmp_path, task="esc50", protocol="linear", dataset=str(root / "tiny" / "esc50"),
                         skip_bad=True))
    assert record.dataset["skipped_files"] == 1 and victim.name in record.dataset["skipped"][0]
    assert record.dataset["profile"] == ""  # a corpus given with --dataset, not a built profile


def test_unknown_protocol_and_task_are_user_errors(tiny_root, tmp_path):
    from bench.errors import UserError

    with pytest.raises(UserError, match="no protocol 'dtw'"):
        run(_req(tiny_root, tmp_path, task="esc50", protocol="dtw"))
    with pytest.raises(UserError, match="unknown task"):
        run(_req(tiny_root, tmp_path, task="esc51", protocol="linear"))
