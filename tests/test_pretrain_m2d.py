"""M2D / M2D-X pretraining: masking, model paths, EMA, losses, data, resume, DDP, converter, CLI.

Everything runs the `tiny` preset on a synthetic corpus written to a temporary directory, so these
tests depend neither on the data builders nor on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import upstreams
from upstreams.errors import CheckpointError
from upstreams.m2d.convert import convert_official, parse_run_name
from upstreams.m2d.data import MelCrops, load_features, mix_in_power
from upstreams.m2d.encoder import ENCODER_PRESETS, Block, EncoderConfig
from upstreams.m2d.m2dx import M2DX
from upstreams.m2d.m2dx_stats import LevelMatched, corpus_level, teacher_frame_stats
from upstreams.m2d.pretrain import M2DX_PRESETS
from upstreams.m2d.masking import PatchMask, gather_tokens, merge_tokens, num_visible, random_mask
from upstreams.m2d.model import M2D, PREDICTOR_PRESETS, ema_rate, m2d_loss
from upstreams.frontend import LogMelConfig
from upstreams.training.config import ConfigError, TrainConfig, override, parse_assignments
from upstreams.training.log import read_log
from upstreams.training.loop import Slot
from upstreams.training.run import pretrain
from upstreams.training.schedule import run_length, warmup_cosine_lr

REPO = Path(__file__).resolve().parents[1]
TINY = ENCODER_PRESETS["tiny"]


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """24 labelled tone clips (1-3.4 s, some with a start offset) and 4 noise clips, as index.csv files."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    paths = {}
    for name, n in (("general", 24), ("noise", 4)):
        d = root / name
        (d / "audio").mkdir(parents=True)
        rows = ["path,start,stop,label,source"]
        for i in range(n):
            t = np.arange(int(16000 * (1.0 + (i % 4) * 0.8))) / 16000
            if name == "noise":
                x = rng.normal(0, 0.05, t.size)
            else:
                x = 0.3 * np.sin(2 * np.pi * (200 + 100 * (i % 6)) * t) * (1 + 0.5 * np.sin(6 * np.pi * t))
                x = x + rng.normal(0, 0.01, t.size)
            sf.write(d / "audio" / f"{i}.wav", x.astype(np.float32), 16000)
            label = "" if name == "noise" else ("low" if i % 6 < 3 else "high")
            rows.append(f"audio/{i}.wav,{'0.2' if i % 5 == 0 else ''},,{label},synthetic")
        (d / "index.csv").write_text("\n".join(rows) + "\n")
        paths[name] = d / "index.csv"
    paths["cache"] = root / "cache"
    return paths


def _overrides(corpus, **train) -> dict:
    # one thread everywhere: results are bit-reproducible for a fixed thread count, and the
    # subprocess runs below (SIGKILL, torchrun) use one thread per process too
    return {"data": {"index": str(corpus["general"]), "cache_dir": str(corpus["cache"])},
            "train": {"tensorboard": True, "threads": 1, **train}}


@pytest.fixture(autouse=True)
def _restore_threads():
    """`train` sets torch's thread count for its process; give pytest's back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory):
    """An uninterrupted tiny M2D run of 20 steps (the reference for resume tests)."""
    out = tmp_path_factory.mktemp("runs") / "m2d" / "tiny-reference"  # <runs root>/<method>/<run name>
    return pretrain("m2d", "tiny", out=str(out), overrides=_overrides(corpus, steps=20), log=_quiet)


def _losses(log_path: Path, key: str = "loss") -> list[float]:
    return [r[key] for r in read_log(log_path) if key in r]


# -- masking ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio,expected_keep", [(0.7, 114), (0.6, 152)])
def test_masking_shapes_ratios_and_determinism(ratio, expected_keep):
    length = 5 * 76  # the mini encoder's grid
    mask = random_mask(4, length, ratio, torch.Generator().manual_seed(1))
    assert mask.ids_keep.shape == (4, expected_keep) and mask.ids_mask.shape == (4, length - expected_keep)
    for keep, drop in zip(mask.ids_keep, mask.ids_mask):
        assert torch.equal(torch.cat([keep, drop]).sort().values, torch.arange(length))  # a partition
        assert torch.equal(keep, keep.sort().values) and torch.equal(drop, drop.sort().values)
    binary = mask.binary()  # 0 keep, 1 remove
    assert binary.shape == (4, length) and binary.sum(1).tolist() == [length - expected_keep] * 4
    assert torch.all(binary.gather(1, mask.ids_keep) == 0)
    again = random_mask(4, length, ratio, torch.Generator().manual_seed(1))
    other = random_mask(4, length, ratio, torch.Generator().manual_seed(2))
    assert torch.equal(again.ids_keep, mask.ids_keep) and not torch.equal(other.ids_keep, mask.ids_keep)
    assert not torch.equal(mask.ids_keep[0], mask.ids_keep[1])  # per sample


def test_num_visible_rounding_and_errors():
    assert num_visible(380, 0.7) == 114  # int(380 * 0.3) would give 113
    for bad in (0.0, 1.0, 0.999):
        with pytest.raises(ValueError):
            num_visible(10, bad)


def test_gather_and_merge_are_inverse():
    x = torch.randn(3, 20, 5)
    mask = random_mask(3, 20, 0.7, torch.Generator().manual_seed(0))
    merged = merge_tokens(gather_tokens(x, mask.ids_keep), gather_tokens(x, mask.ids_mask), mask)
    assert torch.equal(merged, x)


# -- model -----------------------------------------------------------------------------------------
def _batch(cfg: EncoderConfig, b: int = 2, seed: int = 0, ratio: float = 0.7) -> dict:
    g = torch.Generator().manual_seed(seed)
    gf, gt = cfg.grid
    mask = random_mask(b, gf * gt, ratio, g)
    mel = torch.randn(b, 1, cfg.n_mels, cfg.input_frames, generator=g)
    return {"mel": mel, "ids_keep": mask.ids_keep, "ids_mask": mask.ids_mask}


def test_online_sees_only_visible_and_target_only_masked():
    torch.manual_seed(0)
    model = M2D(TINY, PREDICTOR_PRESETS["tiny"]).eval()
    batch = _batch(TINY)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, inputs[0].shape)  # returns None: the output is left alone

        return hook

    model.encoder.blocks[0].register_forward_hook(record("online"))
    model.target_blocks[0].register_forward_hook(record("target"))
    out = model.forward_m2d(batch)
    k, m = batch["ids_keep"].shape[1], batch["ids_mask"].shape[1]
    assert seen == {"online": (2, 1 + k, TINY.embed_dim), "target": (2, 1 + m, TINY.embed_dim)}
    assert out.predicted.shape == (2, k + m, TINY.embed_dim) and out.target.shape == (2, m, TINY.embed_dim)

    # changing the masked patches changes the target but not the online latent, and vice versa
    pf, pt = TINY.patch_size
    gt = TINY.grid[1]

    def perturb(ids):
        mel = batch["mel"].clone()
        for b in range(2):
            for i in ids[b].tolist():
                f, t = divmod(i, gt)
                mel[b, 0, f * pf:(f + 1) * pf, t * pt:(t + 1) * pt] += 1.0
        return {**batch, "mel": mel}

    masked_changed = model.forward_m2d(perturb(batch["ids_mask"]))
    assert torch.equal(masked_changed.latent, out.latent) and not torch.allclose(masked_changed.target, out.target)
    visible_changed = model.forward_m2d(perturb(batch["ids_keep"]))
    assert torch.equal(visible_changed.target, out.target) and not torch.allclose(visible_changed.latent, out.latent)


def test_target_gets_no_gradient_and_online_does():
    torch.manual_seed(0)
    model = M2D(TINY, PREDICTOR_PRESETS["tiny"])
    loss, stats = model(_batch(TINY))
    loss.backward()
    assert all(p.grad is None for p in model.target_parameters())
    assert model.encoder.patch_embed.proj.weight.grad is not None and model.predictor.mask_token.grad is not None
    assert set(stats) >= {"loss_m2d", "target_spread"}


def test_ema_update_maths_and_schedule():
    torch.manual_seed(0)
    model = M2D(TINY, PREDICTOR_PRESETS["tiny"])
    before_t = [p.clone() for p in model.target_parameters()]
    online = [p.detach().clone() for p in model.online_parameters()]
    model.update_target(0.9)
    for t0, o, t1 in zip(before_t, online, model.target_parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * o)
    assert int(model.ema_updates) == 1
    assert ema_rate(0, 101, 0.99995, 0.99999) == 0.99995
    assert ema_rate(100, 101, 0.99995, 0.99999) == pytest.approx(0.99999)
    assert ema_rate(50, 101, 0.99, 0.999) == pytest.approx(0.9945)
    model.update_target(1.0)  # decay 1 keeps the target
    for t_prev, t in zip([0.9 * t0 + 0.1 * o for t0, o in zip(before_t, online)], model.target_parameters()):
        torch.testing.assert_close(t, t_prev)


def test_m2d_loss_values():
    t = torch.randn(2, 7, 16)
    standardised = torch.nn.functional.layer_norm(t, (16,), eps=1e-6)
    assert m2d_loss(standardised, t).item() == pytest.approx(0.0, abs=1e-5)
    assert m2d_loss(-standardised, t).item() == pytest.approx(4.0, abs=1e-5)
    # targets are standardised per token: a per-token affine change does not move the loss
    pred = torch.randn(2, 7, 16)
    scaled = t * torch.rand(2, 7, 1).add(0.5) + torch.randn(2, 7, 1)
    assert m2d_loss(pred, scaled).item() == pytest.approx(m2d_loss(pred, t).item(), rel=1e-4)


def test_noise_mixing_is_power_domain():
    clean, noise = torch.randn(3, 80, 50) - 5, torch.randn(3, 80, 50) - 6
    for eta in (0.01, 0.3, 0.9):
        expected = torch.log(eta * noise.exp() + (1 - eta) * clean.exp())
        torch.testing.assert_close(mix_in_power(clean, noise, eta), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(mix_in_power(clean, noise, 0.0), clean)
    loud = torch.full((1, 1), 80.0)  # exp(80) overflows float32; logaddexp does not
    assert torch.isfinite(mix_in_power(loud, loud, 0.3)).all()
    with pytest.raises(ValueError):
        mix_in_power(clean, noise, 1.0)


def test_m2dx_offline_branch_shapes_and_losses():
    torch.manual_seed(0)
    teacher = M2D(TINY, PREDICTOR_PRESETS["tiny"]).encoder
    model = M2DX(TINY, PREDICTOR_PRESETS["tiny"], teacher=teacher, num_classes=3)
    batch = _batch(TINY, b=4)
    batch["labels"] = torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 0, 0], [0, 0, 1]])
    batch["labelled"] = torch.tensor([1.0, 1.0, 0.0, 1.0])
    loss, stats = model(batch)
    assert set(stats) >= {"loss_m2d", "loss_distill", "loss_sup", "sup_acc"}
    assert loss.item() == pytest.approx(sum(stats[k].item() for k in ("loss_m2d", "loss_distill", "loss_sup")), rel=1e-5)
    out = model.forward_m2d(batch)
    offline = model.offline_embeddings(out.latent, out.predicted, PatchMask(batch["ids_keep"], batch["ids_mask"]))
    assert offline.shape == (4, TINY.grid[1], teacher.config.frame_dim)
    # the unlabelled clip does not count
    changed = {**batch, "labels": batch["labels"].clone()}
    changed["labels"][2] = 1.0
    torch.testing.assert_close(model(changed)[1]["loss_sup"], stats["loss_sup"])
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())


def _const_features(levels: list[float], frames: int = 300, n_mels: int = 80, tmp: Path = Path(".")) -> "MelFeatures":
    """A corpus of segments whose log-mel is one known constant each."""
    from upstreams.m2d.data import MelFeatures

    x = torch.cat([torch.full((frames, n_mels), v) for v in levels]).to(torch.float16)
    return MelFeatures(x, [i * frames for i in range(len(levels) + 1)], [""] * len(levels), tmp / "index.csv", tmp)


def test_noise_at_plus_20_db_is_brought_to_the_main_level_before_the_eta_mix():
    main = _const_features([-6.0, -4.0])  # mean log-mel -5
    loud = _const_features([-6.0 + math.log(100.0), -4.0 + math.log(100.0)])  # the same corpus 20 dB louder
    lm, ln = corpus_level(main, 0, 0), corpus_level(loud, 0, 0)
    assert lm == pytest.approx(-5.0, abs=1e-3) and 10 * (ln - lm) / math.log(10) == pytest.approx(20.0, abs=0.02)
    matched = LevelMatched(loud, lm - ln)
    assert len(matched) == 2 and matched.length(1) == 300
    torch.testing.assert_close(matched.segment(1), main.segment(1).float(), atol=0.02, rtol=0)
    # crops of 1 segment of -5 (main) mixed with noise: matched, the mix keeps the main level at any eta;
    # raw, the +20 dB noise dominates: log(0.3 * 100 e^-5 + 0.7 e^-5) = -5 + log(30.7)
    one = _const_features([-5.0])
    noise_one = _const_features([-5.0 + math.log(100.0)])
    stats = (-5.0, 1.0)
    for noise, expected in ((LevelMatched(noise_one, -math.log(100.0)), -5.0), (noise_one, -5.0 + math.log(30.7))):
        src = MelCrops(one, TINY.input_frames, stats, 5 * 52, 0.7, seed=0, noise=noise, eta=0.3)
        batch = src.get(Slot(0, 0, 2, 1))
        torch.testing.assert_close(batch["mel"], torch.zeros_like(batch["mel"]))  # clean: the main level
        # normalised with (mean -5, std 1)
        torch.testing.assert_close(batch["online_mel"], torch.full_like(batch["mel"], expected + 5.0), atol=0.03, rtol=0)


def test_standardised_distillation_targets_have_mean_0_and_std_1(corpus):
    torch.manual_seed(0)
    teacher = M2D(TINY, PREDICTOR_PRESETS["tiny"]).encoder
    model = M2DX(TINY, PREDICTOR_PRESETS["tiny"], teacher=teacher).eval()
    feats = load_features(corpus["general"], LogMelConfig(), corpus["cache"], log=_quiet)
    src = MelCrops(feats, TINY.input_frames, feats.norm_stats(0, seed=0), 5 * 52, 0.7, seed=1)
    raw = torch.cat([model.teacher_frames(src.get(Slot(k, 0, 8, 1))["mel"]).flatten(0, 1) for k in range(2)])
    assert raw.mean(0).abs().mean() > 0.1  # the raw teacher frames carry per-dimension offsets
    mean, std = teacher_frame_stats(model.teacher_frames, src, clips=16, micro_batch=8)
    torch.testing.assert_close(mean, raw.mean(0), atol=1e-4, rtol=1e-4)
    model.set_distill_stats(mean, std)
    target = torch.cat([model.distill_target(src.get(Slot(k, 0, 8, 1))["mel"]).flatten(0, 1) for k in range(2)])
    assert target.mean(0).abs().max() < 1e-4
    torch.testing.assert_close(target.std(0), torch.ones(target.shape[1]), atol=1e-4, rtol=0)
    assert "distill_mean" in model.state_dict() and "distill_std" in model.state_dict()
    with pytest.raises(ValueError):
        model.set_distill_stats(mean, torch.zeros_like(std))


def test_m2dx_online_branch_gets_the_noisy_input_target_and_teacher_the_clean_one():
    torch.manual_seed(0)
    model = M2DX(TINY, PREDICTOR_PRESETS["tiny"], teacher=M2D(TINY, PREDICTOR_PRESETS["tiny"]).encoder).eval()
    batch = _batch(TINY, b=2)
    noisy = {**batch, "online_mel": batch["mel"] + torch.randn_like(batch["mel"])}
    clean_out, noisy_out = model.forward_m2d(batch), model.forward_m2d(noisy)
    torch.testing.assert_close(noisy_out.target, clean_out.target)  # target encoder: clean
    assert not torch.allclose(noisy_out.latent, clean_out.latent)  # online encoder: noisy
    seen = []
    embed = model.teacher.embed
    model.teacher.embed = lambda x: (seen.append(x), embed(x))[1]  # what the teacher is given
    model(noisy)
    assert len(seen) == 1 and torch.equal(seen[0], batch["mel"])  # teacher_input is (1, 0): the clean mel as is


def test_m2dx_presets_paper_recipe_has_no_labels_supervised_variant_has():
    for name in ("tiny", "mini_respiratory"):
        cfg = M2DX_PRESETS[name]
        assert cfg.offline.supervised_weight == 0 and cfg.offline.distill_weight > 0, name
        assert cfg.noise.eta == 0.3 and cfg.noise.match_level and cfg.offline.standardise_target, name
    for name in ("tiny_supervised", "mini_respiratory_supervised"):
        cfg = M2DX_PRESETS[name]
        paper = M2DX_PRESETS[name.replace("_supervised", "")]
        assert cfg.offline.supervised_weight > 0, name
        assert dataclasses.replace(cfg, offline=paper.offline) == paper, name  # labels are the only difference


# -- data ------------------------------------------------------------------------------------------
def test_feature_cache_and_batches_are_deterministic(corpus):
    feats = load_features(corpus["general"], LogMelConfig(), corpus["cache"], log=_quiet)
    again = load_features(corpus["general"], LogMelConfig(), corpus["cache"], log=_quiet)
    assert feats.directory == again.directory and len(feats) == 24
    assert feats.label_names() == ["high", "low"]
    assert feats.length(0) == 101 - 20  # 1.0 s from 0.2 s: 0.8 s of 16 kHz at hop 160 -> 81 frames
    stats = feats.norm_stats(0, seed=0)
    src = MelCrops(feats, TINY.input_frames, stats, 5 * 52, 0.7, seed=3, label_names=feats.label_names())
    a, b = src.get(Slot(2, 1, 4, 2)), src.get(Slot(2, 1, 4, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["mel"].shape == (4, 1, 80, TINY.input_frames) and a["labels"].shape == (4, 2)
    # one epoch of slots visits every segment exactly once
    seen = [i for m in range(6) for i in src.segment_ids(Slot(0, m, 4, 6))]
    assert sorted(seen) == list(range(24))
    # normalised with the corpus statistics: mean ~0, std ~1 over a whole epoch of crops
    mels = torch.cat([src.get(Slot(0, m, 4, 6))["mel"] for m in range(6)])
    assert abs(mels.mean().item()) < 0.35 and 0.6 < mels.std().item() < 1.4


def test_index_errors_are_clear(tmp_path):
    from upstreams.training.corpus import read_index

    with pytest.raises(ConfigError, match="bench data build"):
        read_index(tmp_path / "missing.csv")
    bad = tmp_path / "index.csv"
    bad.write_text("path,start,stop,label,source\na.wav,2,1,,x\n")
    with pytest.raises(ConfigError, match=r"index.csv:2: stop 1.0 is not after start 2.0"):
        read_index(bad)


# -- config ----------------------------------------------------------------------------------------
def test_config_overrides_are_type_checked(tmp_path):
    from upstreams.m2d.pretrain import M2D_METHOD
    from upstreams.training.run import resolve_config

    cfg = override(TrainConfig(), {"steps": 5, "betas": [0.8, 0.9], "lr": 1})
    assert cfg.steps == 5 and cfg.betas == (0.8, 0.9) and cfg.lr == 1.0
    for bad, msg in (({"stepz": 1}, "unknown config key 'stepz'"), ({"steps": "5"}, "train.steps|steps: expected int"),
                     ({"betas": [0.9]}, "expected 2 values"), ({"precision": "fp8"}, "fp32 or bf16")):
        with pytest.raises(ConfigError, match=msg.split("|")[-1]):
            override(TrainConfig(), bad)
    assert parse_assignments(["train.steps=7", "mask_ratio=0.6", "data.norm_stats=[1, 2]"]) == {
        "train": {"steps": 7}, "mask_ratio": 0.6, "data": {"norm_stats": [1, 2]}}
    f = tmp_path / "run.yaml"
    f.write_text("preset: tiny\nmask_ratio: 0.6\nencoder: {depth: 3}\ntrain: {steps: 12}\n")
    cfg, label = resolve_config(M2D_METHOD, str(f), {"train": {"seed": 4}})
    assert (cfg.mask_ratio, cfg.encoder.depth, cfg.encoder.embed_dim, cfg.train.steps, cfg.train.seed, label) == (
        0.6, 3, TINY.embed_dim, 12, 4, "run")
    f.write_text("preset: tiny\nencoder: {patch_size: [16, 5]}\n")
    with pytest.raises(ConfigError, match="not a multiple of the patch width"):
        resolve_config(M2D_METHOD, str(f))


def test_schedule_warmup_then_cosine():
    assert warmup_cosine_lr(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert warmup_cosine_lr(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_cosine_lr(99, 100, 10, 1.0, min_lr=0.1) == pytest.approx(0.1)
    assert warmup_cosine_lr(10 + 89 // 2, 100, 10, 1.0) == pytest.approx(0.5, abs=0.02)
    assert TrainConfig(batch_size=512, base_lr=3e-4).peak_lr == pytest.approx(6e-4)
    length = run_length(TrainConfig(steps=0, epochs=300, warmup_epochs=20, batch_size=2048), 2_000_000)
    assert (length.total_steps, length.warmup_steps) == (292969, 19531)


# -- training runs ---------------------------------------------------------------------------------
def test_tiny_pretraining_loss_falls_and_checkpoint_is_an_upstream(tiny_run):
    losses = _losses(tiny_run.log)
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses
    ckpt = torch.load(tiny_run.checkpoint, weights_only=True)
    assert {"encoder_config", "frontend_config", "norm_stats", "encoder", "config", "step", "model", "optimizer",
            "scheduler", "rng", "data"} <= set(ckpt)
    assert ckpt["step"] == 20 and ckpt["config"]["train"]["steps"] == 20 and ckpt["config"]["mask_ratio"] == 0.7
    assert int(ckpt["model"]["ema_updates"]) == 20
    wavs = [torch.randn(16000) * 0.1, torch.randn(5000) * 0.1]
    for name in ("m2d", "m2dx"):  # an m2d run loads as m2dx only when told (the checkpoint names its method)
        up = upstreams.load(name, ckpt=tiny_run.checkpoint, **({"any_method": True} if name == "m2dx" else {})).eval()
        with torch.no_grad():
            out = up(wavs)
        assert out.hidden_states[-1].shape[-1] == TINY.frame_dim
        torch.testing.assert_close(up.encoder.blocks[0].attn.qkv.weight, ckpt["encoder"]["blocks.0.attn.qkv.weight"])
    assert (tiny_run.checkpoint.parent / "loss.png").stat().st_size > 1000
    assert (tiny_run.checkpoint.parent / "config.yaml").exists()


def test_latest_run_is_found_through_the_runs_root(tiny_run, monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_RUNS", str(tiny_run.checkpoint.parents[2]))
    up = upstreams.load("m2d")
    assert Path(up.checkpoint_path).resolve() == tiny_run.checkpoint.resolve()
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path))
    with pytest.raises(CheckpointError, match="bench pretrain m2d"):
        upstreams.load("m2d")


def test_resume_after_stop_equals_uninterrupted_run(corpus, tiny_run, tmp_path):
    out = tmp_path / "interrupted"
    first = pretrain("m2d", "tiny", out=str(out), overrides=_overrides(corpus, steps=20, stop_after=7), log=_quiet)
    assert first.step == 7 and len(read_log(first.log)) == 7
    second = pretrain("m2d", out=str(out), resume=True, log=_quiet)
    assert second.step == 20
    a = torch.load(tiny_run.checkpoint, weights_only=True)
    b = torch.load(second.checkpoint, weights_only=True)
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, atol=1e-6, rtol=1e-5, msg=k)
    np.testing.assert_allclose(_losses(second.log), _losses(tiny_run.log), rtol=1e-5)
    with pytest.raises(ConfigError, match="cannot change"):
        pretrain("m2d", out=str(out), resume=True, overrides={"mask_ratio": 0.6}, log=_quiet)


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_matches(corpus, tiny_run, tmp_path):
    out = tmp_path / "killed"
    args = ["-m", "bench.cli", "pretrain", "m2d", "--config", "tiny", "--out", str(out), "--index", str(corpus["general"]),
            "--set", f"data.cache_dir={corpus['cache']}", "--steps", "20", "--set", "train.checkpoint_every=5",
            "--set", "train.threads=1"]
    proc = _cli(*args)
    ckpt = out / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(ckpt, weights_only=True)["step"]
    assert proc.returncode == -signal.SIGKILL and 5 <= saved < 20, (proc.returncode, saved)
    resumed = _cli("-m", "bench.cli", "pretrain", "m2d", "--resume", "--out", str(out), "--set", "train.threads=1")
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log
    a = torch.load(tiny_run.checkpoint, weights_only=True)["model"]
    b = torch.load(ckpt, weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4, msg=k)
    assert [r["step"] for r in read_log(out / "log.jsonl")] == list(range(1, 21))  # no duplicated lines


@pytest.mark.parametrize("preset", ["tiny", "tiny_supervised"])
def test_m2dx_presets_train_and_log_every_loss_part(corpus, tiny_run, tmp_path, preset):
    overrides = {**_overrides(corpus, steps=30), "init": str(tiny_run.checkpoint),
                 "noise": {"index": str(corpus["noise"]), "eta": 0.3}}
    run = pretrain("m2dx", preset, out=str(tmp_path / "m2dx"), overrides=overrides, log=_quiet)
    parts = ["loss_m2d", "loss_distill"] + (["loss_sup", "sup_acc"] if preset == "tiny_supervised" else [])
    rows = read_log(run.log)
    assert all(set(parts) <= set(r) for r in rows) and len(rows) == 30
    assert preset == "tiny_supervised" or not any("loss_sup" in r for r in rows)
    # standardised targets start at 2 - 2 cos ~ 2 (no common offset to win); measured over 30 steps:
    # distillation 2.00 -> 1.43 alone, 2.00 -> 1.86 next to the supervised task (which shares the offline branch)
    checks = (("loss_distill", 0.8),) if preset == "tiny" else (("loss_distill", 0.97), ("loss_sup", 0.7))
    for key, drop in checks:
        values = _losses(run.log, key)
        assert np.mean(values[-5:]) < drop * np.mean(values[:3]), (key, values)
    ckpt = torch.load(run.checkpoint, weights_only=True)
    assert (ckpt.get("label_names") == ["high", "low"]) == (preset == "tiny_supervised")
    noise = ckpt["config"]["noise"]
    assert noise["eta"] == 0.3 and noise["match_level"] and len(noise["levels"]) == 2
    feats = load_features(corpus["general"], LogMelConfig(), corpus["cache"], log=_quiet)
    assert noise["levels"][0] == pytest.approx(corpus_level(feats, 200, 0))  # tiny: norm_stats_segments 200, seed 0
    assert ckpt["model"]["distill_std"].shape == ckpt["model"]["distill_mean"].shape and ckpt["model"]["distill_std"].min() > 0
    assert ckpt["config"]["data"]["norm_stats"] == pytest.approx(torch.load(tiny_run.checkpoint, weights_only=True)["norm_stats"])
    up = upstreams.load("m2dx", ckpt=run.checkpoint)
    assert up.hidden_sizes[-1] == TINY.frame_dim


# -- TensorBoard -----------------------------------------------------------------------------------
def test_tensorboard_event_file_is_valid_tfrecord(tiny_run):
    """Read back with a minimal TFRecord reader and tensorboardX's own `Event` proto (CRCs checked)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    files = list((tiny_run.checkpoint.parent / "tb").glob("events.out.tfevents.*"))
    assert len(files) == 1
    data, events, pos = files[0].read_bytes(), [], 0
    while pos < len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        assert struct.unpack_from("<I", data, pos + 8)[0] == masked_crc32c(data[pos:pos + 8])
        payload = data[pos + 12:pos + 12 + n]
        assert struct.unpack_from("<I", data, pos + 12 + n)[0] == masked_crc32c(payload)
        events.append(Event.FromString(payload))
        pos += 16 + n
    assert events[0].file_version == "brain.Event:2"
    scalars = {}
    for ev in events[1:]:
        for v in ev.summary.value:
            scalars.setdefault(v.tag, []).append((ev.step, v.simple_value))
    assert len(scalars["loss"]) == 20 and [s for s, _ in scalars["loss"]] == list(range(1, 21))
    assert "loss_m2d" in scalars and "clips_per_s" in scalars
    logged = {r["step"]: r["loss"] for r in read_log(tiny_run.log) if "loss" in r}
    assert all(v == pytest.approx(logged[s], rel=1e-6) for s, v in scalars["loss"])


# -- converter -------------------------------------------------------------------------------------
def _mae_sincos(dim: int, gf: int, gt: int) -> np.ndarray:
    """MAE's get_2d_sincos_pos_embed (grid h=gf, w=gt, cls_token=True), restated independently."""

    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(gt, dtype=np.float64), np.arange(gf, dtype=np.float64)), axis=0)
    emb = np.concatenate([one(dim // 2, grid[0]), one(dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros((1, dim)), emb], axis=0)


def _official_state(d=64, depth=2, heads=4, pf=16, pt=4, n_mels=80, frames=208, dp=32, dec_depth=2, seed=0,
                    lazy=False):
    """A state dict with the official M2D key names and shapes (timm ViT + target + decoder/predictor).

    `lazy`: zero-stride tensors (shapes without memory), for checking the full ViT-B layout cheaply.
    """
    g = torch.Generator().manual_seed(seed)
    gf, gt = n_mels // pf, frames // pt

    def r(*shape):
        return torch.zeros(()).expand(*shape) if lazy else torch.randn(*shape, generator=g) * 0.05

    sd = {"cls_token": r(1, 1, d), "pos_embed": torch.from_numpy(_mae_sincos(d, gf, gt)).float()[None],
          "patch_embed.proj.weight": r(d, 1, pf, pt), "patch_embed.proj.bias": r(d),
          "mask_token": r(1, 1, dp), "decoder_pos_embed": torch.from_numpy(_mae_sincos(dp, gf, gt)).float()[None],
          "decoder_embed.weight": r(dp, d), "decoder_embed.bias": r(dp),
          "decoder_norm.weight": 1 + r(dp), "decoder_norm.bias": r(dp), "decoder_pred.weight": r(d, dp), "decoder_pred.bias": r(d),
          "norm.weight": 1 + r(d), "norm.bias": r(d), "target_norm.weight": 1 + r(d), "target_norm.bias": r(d)}

    def block(prefix, dim):
        for k, v in Block(dim, heads).state_dict().items():
            sd[f"{prefix}.{k}"] = (1 + r(*v.shape)) if k.startswith("norm") and k.endswith("weight") else r(*v.shape)

    for i in range(depth):
        block(f"blocks.{i}", d)
        block(f"target_blocks.{i}", d)
    for i in range(dec_depth):
        block(f"decoder_blocks.{i}", dp)
    return sd


def _official_features(sd: dict, mel: torch.Tensor, pf: int, pt: int, heads: int) -> torch.Tensor:
    """The official forward_encoder + `b (f t) d -> b t (f d)`, written from their code's description."""
    d = sd["cls_token"].shape[-1]
    x = torch.nn.functional.conv2d(mel, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=(pf, pt))
    gf, gt = x.shape[2], x.shape[3]
    x = x.flatten(2).transpose(1, 2) + sd["pos_embed"][:, 1:]
    x = torch.cat([(sd["cls_token"] + sd["pos_embed"][:, :1]).expand(len(x), -1, -1), x], dim=1)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        blk = Block(d, heads)
        blk.load_state_dict({k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")})
        x = blk(x)
    x = torch.nn.functional.layer_norm(x, (d,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)[:, 1:]
    return x.reshape(len(x), gf, gt, d).permute(0, 2, 1, 3).reshape(len(x), gt, gf * d)


def test_run_name_parsing():
    assert parse_run_name("m2d_vit_base-80x608p16x16-221006-mr7") == {
        "model": "m2d_vit_base", "n_mels": 80, "frames": 608, "patch": (16, 16), "sr": "16k"}
    assert parse_run_name("m2d_clap_vit_base-80x1001p16x16p32k-240501")["sr"] == "32k"
    assert parse_run_name("checkpoints") is None


@pytest.mark.parametrize("layout", ["pretraining", "ddp_prefix", "evar_finetuned"])
def test_official_checkpoint_converts_and_matches_the_official_forward(tmp_path, layout):
    sd = _official_state()
    folder = tmp_path / "m2d_vit_base-80x208p16x4-230101-mr7"
    folder.mkdir()
    path = folder / "checkpoint-300.pth"
    stats = torch.tensor([-6.5, 4.0])
    if layout == "pretraining":
        obj = {"model": {**sd, "norm_stats": stats}, "optimizer": {"state": {}, "param_groups": []}, "epoch": 300,
               "args": argparse.Namespace(model="m2d_vit_base", input_size=[80, 208], mask_ratio=0.7)}
    elif layout == "ddp_prefix":
        obj = {"model": {f"module.{k}": v for k, v in sd.items()}}
    else:
        obj = {**{f"module.ar.runtime.backbone.{k}": v for k, v in sd.items() if not k.startswith(("target", "decoder", "mask"))},
               "module.ar.runtime.backbone.norm_stats": stats, "module.head.mlp.mlp.0.weight": torch.zeros(50, 320)}
    torch.save(obj, path)

    up = upstreams.load("m2d", ckpt=path).eval()
    cfg = up.encoder.config
    assert (cfg.embed_dim, cfg.depth, cfg.patch_size, cfg.input_frames, cfg.pos_embed_order) == (64, 2, (16, 4), 208, "tf")
    expected_stats = [-7.1, 4.2] if layout == "ddp_prefix" else [-6.5, 4.0]
    assert up.frontend.norm_stats.tolist() == pytest.approx(expected_stats)
    mel = torch.randn(2, 80, 208)
    with torch.no_grad():
        ours = up.encoder.encode_windows(mel.unsqueeze(1), torch.tensor([52, 52]), all_layers=False)[-1]
        theirs = _official_features(sd, mel.unsqueeze(1), 16, 4, heads=1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_official_vit_base_layout_maps_onto_the_base_encoder():
    """The exact key set and shapes of `m2d_vit_base-80x608p16x16` (ViT-B, 12 + 12 target blocks, 8-block predictor)."""
    from upstreams.checkpoints import describe_mismatch
    from upstreams.m2d.encoder import M2DEncoder
    from upstreams.m2d.model import Predictor

    sd = _official_state(d=768, depth=12, heads=12, pf=16, pt=16, frames=608, dp=512, dec_depth=8, lazy=True)
    sd["pos_embed"] = torch.from_numpy(_mae_sincos(768, 5, 38)).float()[None]
    bundle = convert_official({"model": sd, "epoch": 300}, source="x/m2d_vit_base-80x608p16x16-221006-mr7/checkpoint-300.pth")
    cfg = EncoderConfig.from_dict(bundle["encoder_config"])
    assert cfg == dataclasses.replace(ENCODER_PRESETS["base"], pos_embed_order="tf")
    assert describe_mismatch(_meta(M2DEncoder, cfg), bundle["encoder"]) == []
    assert bundle["predictor_config"] == {"embed_dim": 512, "depth": 8, "num_heads": 16, "mlp_ratio": 4.0}
    assert describe_mismatch(_meta(Predictor, cfg, PREDICTOR_PRESETS["base"]), bundle["m2d_predictor"]) == []
    assert len(bundle["m2d_target"]) == len(bundle["encoder"]) - 3  # blocks + norm, no patch embed / CLS


def _meta(cls, *args):
    with torch.device("meta"):
        return cls(*args)


def test_official_checkpoint_can_initialise_further_pretraining(tmp_path):
    from upstreams.m2d.pretrain import load_init

    folder = tmp_path / "m2d_vit_base-80x208p16x4-230101"
    folder.mkdir()
    torch.save({"model": _official_state()}, folder / "checkpoint-300.pth")
    init = load_init(folder / "checkpoint-300.pth")
    assert init.target is not None and init.predictor is not None
    assert (init.predictor_config.embed_dim, init.predictor_config.depth, init.predictor_config.num_heads) == (32, 2, 1)
    from upstreams.m2d.pretrain import _apply_init

    model = M2D(init.encoder_config, init.predictor_config)
    _apply_init(model, init, _quiet)
    torch.testing.assert_close(model.target_blocks[1].mlp.fc2.weight, _official_state()["target_blocks.1.mlp.fc2.weight"])
    torch.testing.assert_close(model.predictor.out.weight, _official_state()["decoder_pred.weight"])


def test_converter_rejects_learned_positions(tmp_path):
    sd = _official_state()
    sd["pos_embed"] = torch.randn_like(sd["pos_embed"])
    with pytest.raises(CheckpointError, match="not a fixed 2-D sin-cos table"):
        convert_official({"model": sd}, source=tmp_path / "m2d_vit_base-80x208p16x4-x" / "c.pth")


# -- CLI and benchmark -----------------------------------------------------------------------------
def test_cli_errors_are_one_line(capsys):
    from bench.cli import main

    assert main(["pretrain", "nosuch"]) == 2
    assert "unknown pretraining method 'nosuch'; choose one of m2d, m2dx, score" in capsys.readouterr().err
    assert main(["pretrain", "m2d", "--config", "tiny", "--set", "train.stepz=3"]) == 2
    assert "unknown config key 'train.stepz'" in capsys.readouterr().err
    assert main(["pretrain", "m2d", "--config", "tiny", "--print-config", "--set", "mask_ratio=0.6"]) == 0
    assert "mask_ratio: 0.6" in capsys.readouterr().out


@pytest.mark.slow
def test_throughput_benchmark_quick():
    proc = _cli("benchmarks/pretrain_throughput.py", "--quick", "--json", "--precisions", "fp32", "--steps", "2")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["fp32"]["real_ms_per_step"] > 0 and result["fp32"]["bare_ms_per_step"] > 0
