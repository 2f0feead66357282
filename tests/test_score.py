"""SCORE fine-tuning: the loss falls, only the top layers and the projection move, the result is an upstream."""

from __future__ import annotations

import json

import pytest
import torch

import upstreams
from upstreams.m2d.upstream import random_upstream
from upstreams.training.run import pretrain


@pytest.fixture(scope="module")
def score_run(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("score") / "run"
    index = tiny_root / "tiny" / "pretrain" / "general" / "index.csv"
    result = pretrain("score", config="tiny", out=str(out),
                      overrides={"data": {"index": str(index)}, "top_layers": 1}, log=lambda _m: None)
    return result


def test_loss_falls(score_run):
    losses = [json.loads(line)["loss"] for line in score_run.log.read_text().splitlines()]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_only_top_layers_and_projection_change(score_run):
    state = torch.load(score_run.checkpoint, weights_only=True)["model"]
    base = random_upstream("tiny", seed=0).state_dict()  # the tiny preset's base: random, arch=tiny, seed 0
    moved = {k for k, v in base.items() if not torch.equal(v, state[f"student.{k}"])}
    assert moved, "nothing trained"
    assert all(k.startswith(("encoder.blocks.1.", "encoder.norm.")) for k in moved), sorted(moved)[:5]
    assert any(k.startswith("encoder.blocks.1.") for k in moved) and any(k.startswith("encoder.norm.") for k in moved)
    # the frozen teacher stays the base
    assert all(torch.equal(v, state[f"teacher.{k}"]) for k, v in base.items())
    assert "projection.weight" in state and state["projection.weight"].shape == (256, base["encoder.norm.weight"].shape[0] * 5)


def test_checkpoint_is_the_score_upstream(score_run):
    up = upstreams.load("score", ckpt=score_run.checkpoint).eval()
    ident = up.describe()
    assert ident["options"]["base"] == "random" and ident["options"]["top_layers"] == 1
    assert len(ident["checkpoint_sha256"]) == 64
    out = up([torch.randn(16000) * 0.1, torch.randn(8000) * 0.1])
    assert out.hidden_states[-1].shape[-1] == up.hidden_sizes[-1]


def test_base_without_layers_is_refused(tiny_root, tmp_path):
    from upstreams.errors import OptionError

    with pytest.raises(OptionError, match="does not expose its layers"):
        pretrain("score", config="tiny", out=str(tmp_path / "r"),
                 overrides={"base": "fbank", "base_options": [], "data": {"index": str(
                     tiny_root / "tiny" / "pretrain" / "general" / "index.csv")}}, log=lambda _m: None)
