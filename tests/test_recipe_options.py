"""The M2D recipe options the mini recipe study compares: time-span masking, per-clip target
standardisation, packing short clips, and resampling the corpus towards non-speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from upstreams.m2d.data import MelCrops, MelFeatures, resample_by_source
from upstreams.m2d.masking import make_mask, random_mask, time_span_mask
from upstreams.m2d.model import m2d_loss, normalise_targets
from upstreams.training.config import ConfigError
from upstreams.training.log import read_log
from upstreams.training.loop import Slot
from upstreams.training.probe import constant_floor
from upstreams.training.run import pretrain


# -- masking ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid,ratio,span", [((1, 38), 0.7, 5), ((2, 19), 0.6, 3), ((1, 20), 0.5, 1), ((5, 19), 0.7, 4)])
def test_time_span_mask_masks_whole_columns_in_runs_with_exact_counts(grid, ratio, span):
    gf, gt = grid
    gen = torch.Generator().manual_seed(1)
    m = time_span_mask(16, grid, ratio, span, gen)
    keep_cols = round(gt * (1 - ratio))
    assert m.ids_keep.shape == (16, gf * keep_cols) and m.ids_mask.shape == (16, gf * (gt - keep_cols))
    binary = m.binary().view(16, gf, gt)
    assert torch.equal(binary, binary[:, :1].expand_as(binary))  # every frequency row masks the same columns
    for row in binary[:, 0]:
        cols = row.nonzero().flatten().tolist()
        # masked columns come in runs: a run shorter than `span` can only touch the crop's ends or be the cut block
        runs, start = [], cols[0]
        for a, b in zip(cols, cols[1:] + [None]):
            if b != a + 1:
                runs.append((start, a))
                start = b
        short = [r for r in runs if r[1] - r[0] + 1 < span and r[0] > 0 and r[1] < gt - 1]
        assert len(short) <= 1
    # deterministic given the generator, different across samples
    again = time_span_mask(16, grid, ratio, span, torch.Generator().manual_seed(1))
    assert torch.equal(again.ids_mask, m.ids_mask)
    assert len({tuple(r.tolist()) for r in m.ids_mask}) > 1


def test_make_mask_without_span_is_the_papers_random_mask():
    a = make_mask(4, (5, 19), 0.7, 0, torch.Generator().manual_seed(3))
    b = random_mask(4, 95, 0.7, torch.Generator().manual_seed(3))
    assert torch.equal(a.ids_keep, b.ids_keep) and torch.equal(a.ids_mask, b.ids_mask)
    with pytest.raises(ValueError, match="span"):
        time_span_mask(2, (1, 10), 0.7, 0)


# -- target standardisation ------------------------------------------------------------------------
def test_clip_standardisation_removes_what_a_clips_tokens_share():
    gen = torch.Generator().manual_seed(0)
    # a direction every token shares (as in a random or early target encoder), plus a per-clip offset
    shared = torch.randn(1, 1, 32, generator=gen) * 5 + torch.randn(8, 1, 32, generator=gen)
    target = shared + 0.5 * torch.randn(8, 20, 32, generator=gen)
    token, clip = normalise_targets(target, "token"), normalise_targets(target, "clip")
    # token: a constant predictor scores well below 2 (the shared direction); clip: close to 2
    assert constant_floor(target) < 0.5
    assert constant_floor(clip, standardise=False) > 1.8
    assert torch.allclose(clip.mean(dim=1), torch.zeros(8, 32), atol=0.2)
    # the loss uses exactly these targets
    pred = torch.randn(8, 20, 32, generator=gen)
    cos = (torch.nn.functional.normalize(pred, dim=-1) * torch.nn.functional.normalize(clip, dim=-1)).sum(-1)
    assert m2d_loss(pred, target, "clip").item() == pytest.approx(float((2 - 2 * cos).mean()), rel=1e-5)
    assert m2d_loss(pred, target).item() == pytest.approx(m2d_loss(pred, target, "token").item())
    assert torch.allclose(token.std(-1, unbiased=False), torch.ones(8, 20), atol=1e-3)
    with pytest.raises(ValueError, match="token, clip|clip"):
        normalise_targets(target, "batch")


# -- data ------------------------------------------------------------------------------------------
def _features(lengths: list[int], sources: list[str], n_mels: int = 8) -> MelFeatures:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    frames = torch.cat([torch.full((n, n_mels), float(i + 1)) for i, n in enumerate(lengths)]).half()
    return MelFeatures(frames, offsets, [""] * len(lengths), Path("index.csv"), Path("."), sources)


def test_speech_share_resamples_the_epoch_by_source():
    feats = _features([50] * 10, ["librispeech:a"] * 8 + ["debian:x"] * 2)
    assert resample_by_source(feats, 0.0) == list(range(10))
    half = resample_by_source(feats, 0.5)
    speech = sum(feats.sources[i].startswith("librispeech:") for i in half)
    assert speech / len(half) == pytest.approx(0.5)
    assert sorted(set(half)) == list(range(10))  # every segment still appears
    more = resample_by_source(_features([50] * 10, ["librispeech:a"] * 2 + ["debian:x"] * 8), 0.8)
    assert sum(i < 2 for i in more) / len(more) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        resample_by_source(feats, 1.0)
    crops = MelCrops(feats, 40, (0.0, 1.0), 10, 0.7, seed=0, speech_share=0.5)
    assert crops.samples_per_epoch == len(half)


def test_pack_short_fills_crops_with_other_segments_and_padding_keeps_the_mean():
    feats = _features([10, 100, 100], ["debian:a", "debian:b", "debian:c"])
    slot = Slot(step=0, micro=0, micro_batch=3, micros_per_step=1)
    padded = MelCrops(feats, 40, (0.0, 1.0), 10, 0.7, seed=0)._crop(feats, 0, slot.generator(0))
    packed = MelCrops(feats, 40, (0.0, 1.0), 10, 0.7, seed=0, pack_short=True)._crop(feats, 0, slot.generator(0))
    assert torch.all(padded[:, :10] == 1) and torch.all(padded[:, 10:] == 0)  # corpus mean 0
    assert torch.all(packed[:, :10] == 1) and torch.all(packed[:, 10:] > 0)  # filled with other segments' frames
    batch = MelCrops(feats, 40, (0.0, 1.0), 10, 0.7, seed=0, pack_short=True, grid=(2, 5), mask_span=2).get(slot)
    assert batch["mel"].shape == (3, 1, 8, 40) and batch["ids_mask"].shape[1] == 2 * 3


# -- config and a tiny run -------------------------------------------------------------------------
def test_recipe_options_are_checked_at_start(tmp_path):
    for key, value, match in (("target_standardise", "batch", "target_standardise"), ("mask_span", -1, "mask_span"),
                              ("data.speech_share", 1.0, "speech_share")):
        head, _, leaf = key.rpartition(".")
        over = {head: {leaf: value}} if head else {key: value}
        with pytest.raises(ConfigError, match=match):
            pretrain("m2d", "tiny", out=str(tmp_path / key), overrides=over, log=lambda _m: None)


def test_tiny_run_with_every_option_trains_and_probes(tiny_root, tmp_path):
    out = tmp_path / "m2d" / "opts"
    over = {"target_standardise": "clip", "mask_span": 2, "data": {"pack_short": True, "speech_share": 0.5},
            "train": {"steps": 6, "warmup_steps": 1, "probe_every": 3, "threads": 1, "tensorboard": False}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_DATA", str(tiny_root))
        pretrain("m2d", "tiny", out=str(out), overrides=over, log=lambda _m: None)
    rows = read_log(out / "log.jsonl")
    probes = [r for r in rows if "probe/loss" in r]
    assert probes and all(np.isfinite(r["probe/floor_constant"]) for r in probes)
    # with per-clip standardisation a constant predictor is near 2 - 2 * 0 = 2
    assert probes[0]["probe/floor_constant"] > 1.5
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
