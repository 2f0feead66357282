"""The embedding contract, checked once for every upstream that loads without a pretraining run."""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

import pytest
import torch

import upstreams
from upstreams.m2d.upstream import M2DUpstream, random_upstream

FIXTURES = Path(__file__).parent / "fixtures"
LENGTHS = (16000, 7000, 23456, 400, 1)


@pytest.fixture(scope="module")
def m2d_ckpt(tmp_path_factory) -> Path:
    """A weight bundle saved from a seeded tiny model: exercises the checkpoint path of `m2d`."""
    up = random_upstream("tiny", seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    torch.save(up.bundle(step=0), path)
    return path


def _load(name: str, m2d_ckpt: Path):
    if name == "m2d":
        return upstreams.load("m2d", ckpt=m2d_ckpt).eval()
    if name == "random":
        return upstreams.load("random", arch="tiny").eval()
    return upstreams.load(name).eval()


def _wavs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) * 0.1 for n in LENGTHS]


UPSTREAMS = ["fbank", "random", "m2d"]


def test_required_names_registered():
    for name in ("fbank", "random", "m2d", "m2dx"):
        assert name in upstreams.names()


@pytest.mark.parametrize("name", UPSTREAMS)
def test_contract_shapes_and_lengths(name, m2d_ckpt):
    up = _load(name, m2d_ckpt)
    assert isinstance(up, torch.nn.Module)
    assert up.sample_rate == 16000 and up.downsample_rate > 0
    assert up.num_layers == len(up.hidden_sizes) >= 1
    wavs = _wavs()
    with torch.no_grad():
        out = up(wavs)
    assert len(out.hidden_states) == up.num_layers
    assert out.lengths.tolist() == [up.num_frames(len(w)) for w in wavs]
    for h, d in zip(out.hidden_states, up.hidden_sizes):
        assert h.shape == (len(wavs), int(out.lengths.max()), d)
        assert h.dtype == torch.float32 and torch.isfinite(h).all()
    # frame count matches the advertised stride (s3prl tolerates 5 frames)
    for w, n in zip(wavs, out.lengths.tolist()):
        assert abs(n - round(len(w) / up.downsample_rate)) <= 2
    emb = up.scene_embeddings(wavs)
    assert emb.shape == (len(wavs), up.hidden_sizes[-1])


@pytest.mark.parametrize("name", UPSTREAMS)
def test_batch_consistency_and_determinism(name, m2d_ckpt):
    """Stacking per-item results equals the batched result: padding never leaks into features."""
    up = _load(name, m2d_ckpt)
    wavs = _wavs()
    with torch.no_grad():
        batched = up(wavs)
        again = up(wavs)
        for i, w in enumerate(wavs):
            single = up([w])
            n = int(batched.lengths[i])
            assert int(single.lengths[0]) == n
            for hb, hs in zip(batched.hidden_states, single.hidden_states):
                torch.testing.assert_close(hb[i, :n], hs[0, :n], atol=2e-5, rtol=1e-4)
    for a, b in zip(batched.hidden_states, again.hidden_states):
        assert torch.equal(a, b)


def test_random_is_seeded():
    a, b, c = random_upstream("tiny", seed=0), random_upstream("tiny", seed=0), random_upstream("tiny", seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_long_audio_is_encoded_window_by_window():
    """Windowed encoding of long audio == encoding each window's spectrogram slice on its own."""
    up = random_upstream("tiny", seed=0).eval()
    cfg = up.encoder.config
    wav = torch.randn(int(16000 * 5.3)) * 0.1  # 531 mel frames: 2 full 208-frame windows + 1 partial
    with torch.no_grad():
        out = up([wav])
        mel, n = up.frontend([wav])
        pieces = []
        for start in range(0, int(n[0]), cfg.input_frames):
            sl = mel[:, :, start : min(start + cfg.input_frames, int(n[0]))]
            states, lens = up.encoder(sl, torch.tensor([sl.shape[-1]]))
            pieces.append(states[-1][0, : int(lens[0])])
        torch.testing.assert_close(out.hidden_states[-1][0], torch.cat(pieces), atol=2e-5, rtol=1e-4)
        # bounding how many windows go through the model at once does not change anything
        up.max_windows = 1
        one_at_a_time = up([wav])
    for a, b in zip(out.hidden_states, one_at_a_time.hidden_states):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_ten_minute_file_runs():
    up = random_upstream("tiny", seed=0).eval()
    wav = torch.randn(16000 * 600) * 0.05
    up.max_windows = 16
    with torch.no_grad():
        out = up([wav])
    assert int(out.lengths[0]) == up.num_frames(wav.numel())
    assert out.hidden_states[-1].shape[1] == int(out.lengths[0])


@pytest.mark.parametrize(
    "bad, match",
    [
        ([torch.randn(100), torch.zeros(0)], "waveform 1: empty"),
        ([torch.randn(100), torch.tensor([0.0, float("nan")])], "waveform 1: contains NaN"),
        ([torch.randn(2, 100)], "waveform 0: expected a 1-D"),
        ([torch.arange(10)], "waveform 0: expected floating point"),
        ([], "empty batch"),
    ],
)
def test_bad_waveforms_name_their_index(bad, match):
    up = upstreams.load("fbank")
    with pytest.raises(ValueError, match=match):
        up(bad)


def test_unknown_upstream_lists_known_names():
    with pytest.raises(upstreams.UnknownUpstreamError) as err:
        upstreams.load("hubert_nonexistent")
    msg = str(err.value)
    assert "hubert_nonexistent" in msg and "fbank" in msg and "random" in msg


def test_bad_option_is_named():
    with pytest.raises(upstreams.OptionError, match="n_mel"):
        upstreams.load("fbank", n_mel=40)
    with pytest.raises(upstreams.OptionError, match="arch 'huge'"):
        upstreams.load("random", arch="huge")


def test_missing_checkpoint_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path))
    with pytest.raises(upstreams.CheckpointError, match="bench pretrain m2d"):
        upstreams.load("m2d")
    with pytest.raises(upstreams.CheckpointError, match="not found"):
        upstreams.load("m2d", ckpt=tmp_path / "nope.pt")


def test_mismatched_checkpoint_lists_keys_and_shapes(tmp_path):
    bundle = random_upstream("tiny").bundle()
    bundle["encoder"]["blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    del bundle["encoder"]["norm.bias"]
    path = tmp_path / "bad.pt"
    torch.save(bundle, path)
    with pytest.raises(upstreams.CheckpointError) as err:
        upstreams.load("m2d", ckpt=path)
    msg = str(err.value)
    assert "blocks.0.attn.qkv.weight" in msg and "(3, 3)" in msg and "missing norm.bias" in msg


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"encoder": _Evil()}, path)
    with pytest.raises(upstreams.CheckpointError, match="refused"):
        upstreams.load("m2d", ckpt=path)


def test_latest_run_is_found(tmp_path, monkeypatch, m2d_ckpt):
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path))
    run = tmp_path / "m2d" / "run1"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(m2d_ckpt.read_bytes())
    up = upstreams.load("m2d")
    assert isinstance(up, M2DUpstream) and up.checkpoint_path.endswith("run1/checkpoint.pt")
    assert up.describe()["checkpoint_sha256"] and len(up.checkpoint_sha256) == 64


def test_ad_hoc_module_factory(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    up = upstreams.load("custom_upstream:energy", scale=2.0)
    out = up([torch.randn(3200), torch.randn(1000)])
    assert out.lengths.tolist() == [10, 4]
    with pytest.raises(upstreams.UnknownUpstreamError, match="no callable 'nope'"):
        upstreams.load("custom_upstream:nope")


def test_entry_point_registration(tmp_path, monkeypatch):
    """A distribution declaring `[bench.upstreams]` shows up in names() and loads."""
    dist = tmp_path / "thirdparty_upstream-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-upstream\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bench.upstreams]\nenergy3p = custom_upstream:energy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(FIXTURES))
    assert "energy3p" in upstreams.names()
    up = upstreams.load("energy3p")
    assert upstreams.info("energy3p").source.startswith("entry-point")
    assert up([torch.randn(640)]).hidden_states[0].shape == (1, 2, 1)


def test_torch_threads_sets_and_restores_the_count():
    import torch

    from upstreams.threads import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("restored even on error")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
