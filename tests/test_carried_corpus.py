"""The prebuilt log-mel corpus the GPU check carries (`upstreams.m2d.prebuilt`, `carried_corpus`).

Checked against the path it replaces: training on a prebuilt copy of a log-mel cache gives the
same losses as training from the index and the cache, and the carried probe clips are the ones
the probe reads from audio, with the same log-mel.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tone_corpus import write_tone_corpus
from upstreams.frontend import LogMel, LogMelConfig, log_mel
from upstreams.m2d.carried_corpus import build_carried_corpus
from upstreams.m2d.data import load_features
from upstreams.m2d.prebuilt import open_prebuilt, probe_clips, write_prebuilt
from upstreams.training.config import ConfigError
from upstreams.training.corpus import probe_clip_sets, read_segment
from upstreams.training.log import read_log
from upstreams.training.loop import seed_for
from upstreams.training.run import pretrain


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_prebuilt_round_trip_manifest_and_frontend_checks(tmp_path):
    fe = LogMelConfig()
    g = torch.Generator().manual_seed(0)
    mels = [torch.randn(fe.n_mels, n, generator=g) for n in (5, 1, 30)]
    size = write_prebuilt(tmp_path / "p", mels, fe, labels=["a", "b", "a"], sets=["s", "s", "t"],
                          sources=[{"source": f"x{i}"} for i in range(3)])
    assert size == sum(f.stat().st_size for f in (tmp_path / "p").iterdir())
    feats = open_prebuilt(tmp_path / "p", fe)
    assert len(feats) == 3 and feats.labels == ["a", "b", "a"]
    for i, x in enumerate(mels):
        assert torch.equal(feats.segment(i), x.to(torch.float16))
    clips = probe_clips(tmp_path / "p", fe)
    assert sorted(clips) == ["s", "t"] and [lab for _, lab in clips["s"]] == ["a", "b"]
    with pytest.raises(ConfigError, match="front end"):
        open_prebuilt(tmp_path / "p", LogMelConfig(f_min=0.0))
    with open(tmp_path / "p" / "frames.f16", "r+b") as fh:  # one flipped byte
        fh.write(b"\x00\x7c")
    with pytest.raises(ConfigError, match="sha256"):
        open_prebuilt(tmp_path / "p", fe)
    with pytest.raises(ConfigError, match="SHA256SUMS"):
        open_prebuilt(tmp_path, fe)


def _tone_corpus(root: Path) -> Path:
    return write_tone_corpus(root, n=8, len_cycle=3, len_step=0.9, freq_cycle=4, freq_step=150.0)


def test_pretraining_on_prebuilt_features_equals_index_and_cache(tmp_path):
    index = _tone_corpus(tmp_path / "corpus")
    fe = LogMelConfig()
    cache = load_features(index, fe, tmp_path / "cache", log=lambda _m: None)
    write_prebuilt(tmp_path / "prebuilt", [cache.segment(i) for i in range(len(cache))], fe)
    train = {"steps": 3, "warmup_steps": 1, "threads": 1, "probe_every": 0}
    a = pretrain("m2d", "tiny", out=str(tmp_path / "a"), log=lambda _m: None,
                 overrides={"data": {"index": str(index), "cache_dir": str(tmp_path / "cache")}, "train": train})
    b = pretrain("m2d", "tiny", out=str(tmp_path / "b"), log=lambda _m: None,
                 overrides={"data": {"features": str(tmp_path / "prebuilt")}, "train": train})
    losses = [[r["loss"] for r in read_log(run.log) if "loss" in r] for run in (a, b)]
    assert len(losses[0]) == 3 and losses[0] == losses[1]


def test_carried_corpus_from_tiny_profile(tiny_root, tmp_path):
    summary = build_carried_corpus(tmp_path / "gc", profile="tiny", root=tiny_root, train_mib=0.25,
                                   probe_per_class=2, probe_classes=3, log=lambda _m: None)
    fe = LogMelConfig()
    train = open_prebuilt(tmp_path / "gc" / "train", fe)
    assert summary["train_frames"] == train.offsets[-1] <= 0.25 * (1 << 20) // (2 * fe.n_mels)
    assert max(train.length(i) for i in range(len(train))) <= 304 * 3 // 2  # mini window x 1.5
    meta = json.loads((tmp_path / "gc" / "train" / "meta.json").read_text())
    assert not any(str(tiny_root) in s["path"] for s in meta["segments"])  # no machine's absolute path

    clips = probe_clips(tmp_path / "gc" / "probe", fe)
    assert clips, "the tiny profile has labelled ESC-50 clips"
    # the same clips the probe would read from audio (train.seed 0), fewer per class, same log-mel
    from_audio = probe_clip_sets("tiny", 8, seed_for(0, "probe-labels"), root=tiny_root)
    pmeta = json.loads((tmp_path / "gc" / "probe" / "meta.json").read_text())
    mel = LogMel(fe).mel
    for i, (name, src) in enumerate(zip(pmeta["sets"], pmeta["segments"])):
        seg = next(s for s in from_audio[name] if str(s.path).endswith(src["path"]))
        x = log_mel(read_segment(seg, fe.sample_rate, "test"), mel)
        start = max(0, (x.shape[1] - 304) // 2)
        carried = open_prebuilt(tmp_path / "gc" / "probe", fe).segment(i)
        assert torch.equal(carried, x[:, start : start + 304].to(torch.float16))
    for name, items in clips.items():
        labels = [lab for _, lab in items]
        assert len(set(labels)) <= 3 and all(labels.count(lab) <= 2 for lab in labels)

    # a run on the carried corpus probes with it (kNN on the carried clips), without any audio
    run = pretrain("m2d", "tiny", out=str(tmp_path / "run"), log=lambda _m: None,
                   overrides={"data": {"features": str(tmp_path / "gc" / "train"),
                                       "probe_features": str(tmp_path / "gc" / "probe"), "profile": "absent"},
                              "train": {"steps": 2, "warmup_steps": 1, "threads": 1, "probe_every": 2}})
    probes = [r for r in read_log(run.log) if "probe/rankme_online" in r]
    assert probes and all(f"probe/knn_{name}" in probes[-1] for name in clips)
