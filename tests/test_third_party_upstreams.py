"""Third-party upstreams: any HEAR 2021 module (`hear:PKG.MODULE`) and any s3prl upstream (`s3prl:NAME`).

The HEAR side runs a real third-party module, `hearbaseline.naive` (PyPI hearbaseline 2021.1.1, installed
--no-deps by scripts/setup.sh), end to end; the s3prl side builds s3prl 0.4.18's own experts.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import upstreams
from bench.cache import EmbeddingCache
from bench.cli import main as bench_main
from bench.run import RunRequest, run
from tiny_requests import tiny_request
from upstreams.errors import CheckpointError, OptionError, UnknownUpstreamError, UpstreamError



def _req(tiny_root, tmp_path, **kw) -> RunRequest:
    return tiny_request(tiny_root, tmp_path, **{"upstream_options": {}, **kw})  # callers name the upstream


def _wavs(*seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(int(s * 16000), generator=g) for s in seconds]


def _cached_features(cache_root: Path) -> dict[str, bytes]:
    return {e["upstream"]: (Path(e["path"]) / "features.f16").read_bytes()
            for e in EmbeddingCache(cache_root).entries()}


def _one_line_error(exc_info) -> str:
    text = str(exc_info.value)
    assert text and "\n" not in text, text
    return text


# -- HEAR: a real third-party module -------------------------------------------------------------------

@pytest.fixture(scope="module")
def naive():
    return upstreams.load("hear:hearbaseline.naive")


def test_hearbaseline_naive_contract_and_valid_lengths(naive):
    assert (naive.sample_rate, naive.downsample_rate, naive.num_layers, naive.hidden_sizes) == (16000, 800, 1, [4096])
    a, b = _wavs(1.0, 0.3)
    out = naive([a, b])
    # 44.1 kHz, timestamps every 50 ms from 0: 0..1000 ms lie in the 1 s clip, 0..300 ms in the 0.3 s one
    assert out.lengths.tolist() == [21, 7] and out.hidden_states[0].shape == (2, 21, 4096)
    alone = naive([b])
    assert alone.lengths.tolist() == [7]
    torch.testing.assert_close(alone.hidden_states[0][0], out.hidden_states[0][1, :7], rtol=1e-4, atol=1e-3)
    assert naive.scene_embeddings([a, b]).shape == (2, 4096)
    ident = naive.describe()
    assert ident["name"] == "hear:hearbaseline.naive"
    assert ident["hear"]["module"] == "hearbaseline.naive" and ident["hear"]["distribution"] == "hearbaseline"
    assert ident["hear"]["version"] == "2021.1.1" and ident["hear"]["sample_rate"] == 44100
    assert ident["checkpoint_sha256"] is None and "timestamp" in ident["hear"]["valid_frames"]
    assert sys.modules.get("tensorflow") is None  # never imported in this process
    twin = copy.deepcopy(naive)  # fine-tuning deep-copies its upstream
    torch.testing.assert_close(twin([b]).hidden_states[0], alone.hidden_states[0])


def test_hear_model_file_is_loaded_and_hashed(naive, tmp_path):
    state = {k: v.clone() for k, v in naive.model.state_dict().items()}
    state["projection"] = state["projection"] * 2  # embeddings are linear in the projection
    path = tmp_path / "naive_x2.pt"
    from collections import OrderedDict

    torch.save(OrderedDict(state), path)
    twice = upstreams.load("hear:hearbaseline.naive", model_file=str(path))
    assert twice.describe()["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert twice.describe()["hear"]["model_file_sha256"] == twice.checkpoint_sha256
    wav = _wavs(0.5)
    torch.testing.assert_close(twice(wav).hidden_states[0], 2 * naive(wav).hidden_states[0], rtol=1e-4, atol=1e-3)
    assert upstreams.load("hear:hearbaseline.naive", ckpt=str(path)).checkpoint_sha256 == twice.checkpoint_sha256
    with pytest.raises(CheckpointError, match="not found"):
        upstreams.load("hear:hearbaseline.naive", model_file=str(tmp_path / "missing.pt"))


def test_hear_valid_frames_rule_and_unpadded_batches():
    """Padded batch: frames whose timestamp lies within each clip; pad_batches=False: each clip as if alone."""
    a, b = _wavs(1.0, 0.3)
    ref = upstreams.load("fbank")([a, b])
    padded = upstreams.load("hear:upstreams.hear.fbank")
    assert (padded.downsample_rate, padded.first_frame_center) == (160, 0.0125)
    out = padded([a, b])
    # centres 12.5 + 10 t ms <= 300 ms -> 29 frames for the short clip (fbank alone: 28 whole 25 ms windows)
    assert out.lengths.tolist() == [98, 29] and ref.lengths.tolist() == [98, 28]
    assert torch.equal(out.hidden_states[0][0], ref.hidden_states[0][0])
    exact = upstreams.load("hear:upstreams.hear.fbank", pad_batches=False)([a, b])
    assert exact.lengths.tolist() == [98, 28]
    assert torch.equal(exact.hidden_states[0], ref.hidden_states[0])


def test_hear_round_trip_scores_what_fbank_scores(tiny_root, tmp_path):
    """fbank exported as a HEAR module and read back as `hear:upstreams.hear.fbank`: the same record."""
    direct, _ = run(_req(tiny_root, tmp_path, upstream="fbank", task="esc50", protocol="linear"), log=lambda _m: None)
    back, _ = run(_req(tiny_root, tmp_path, upstream="hear:upstreams.hear.fbank", task="esc50", protocol="linear"),
                  log=lambda _m: None)
    assert back.score == direct.score and back.lr == direct.lr
    assert back.secondary["val_score"] == direct.secondary["val_score"]
    feats = _cached_features(tmp_path / "cache")
    assert feats["hear:upstreams.hear.fbank"] == feats["fbank"]  # byte-identical pooled embeddings
    assert back.details["upstream"]["hear"]["module"] == "upstreams.hear.fbank"


def test_bench_run_hearbaseline_naive_on_tiny_icbhi(tiny_root, tmp_path, capsys):
    rc = bench_main(["run", "--upstream", "hear:hearbaseline.naive", "--task", "icbhi", "--protocol", "linear",
                     "--profile", "tiny", "--data-root", str(tiny_root), "--results", str(tmp_path / "results"),
                     "--cache-root", str(tmp_path / "cache"), "--no-progress", "--json"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["upstream"] == "hear:hearbaseline.naive" and rec["task"] == "icbhi" and rec["protocol"] == "linear"
    assert 0.0 <= rec["score"] <= 100.0 and {"se", "sp"} <= set(rec["secondary"])
    assert rec["details"]["upstream"]["hear"]["version"] == "2021.1.1"


FAKE_MODULES = {
    "fake_hear_no_api": "def load_model(model_file_path=''):\n    return object()\n",
    "fake_hear_shapes": """
        import torch
        class M:
            sample_rate = 16000
        def load_model(model_file_path=''):
            return M()
        def get_timestamp_embeddings(audio, model):
            return torch.zeros(audio.shape[0], 8), torch.zeros(audio.shape[0], 1)  # 2-D embeddings
        def get_scene_embeddings(audio, model):
            return torch.zeros(audio.shape[0], 8)
    """,
    "fake_hear_uneven": """
        import torch
        class M:
            sample_rate = 16000
        def load_model(model_file_path=''):
            return M()
        def get_timestamp_embeddings(audio, model):
            ts = torch.tensor([0.0, 10.0, 30.0, 35.0, 80.0]).expand(audio.shape[0], -1)
            return torch.zeros(audio.shape[0], 5, 8), ts
        def get_scene_embeddings(audio, model):
            return torch.zeros(audio.shape[0], 8)
    """,
    "fake_hear_tf": "import tensorflow\n",
    "fake_hear_no_rate": """
        import torch
        def load_model(model_file_path=''):
            return object()
        def get_timestamp_embeddings(audio, model):
            raise AssertionError
        def get_scene_embeddings(audio, model):
            raise AssertionError
    """,
}


@pytest.mark.parametrize("module, exc, match", [
    ("no_such_pkg.hear_module", UnknownUpstreamError, "cannot import HEAR module 'no_such_pkg.hear_module'"),
    ("fake_hear_no_api", UpstreamError, "not a HEAR 2021 module: it lacks get_timestamp_embeddings"),
    ("fake_hear_shapes", UpstreamError, r"must be \[n_sounds=2, n_timestamps>=1, dim\], got shape \(2, 8\)"),
    ("fake_hear_uneven", UpstreamError, "timestamps are not evenly spaced"),
    ("fake_hear_tf", UnknownUpstreamError, "imports TensorFlow"),
    ("fake_hear_no_rate", UpstreamError, "no valid integer sample_rate"),
])
def test_bad_hear_modules_fail_with_one_line(tmp_path, monkeypatch, module, exc, match):
    for name, src in FAKE_MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(src))
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(exc, match=match) as info:
        upstreams.load(f"hear:{module}")
    assert _one_line_error(info).startswith(("upstream 'hear:", "hear:"))


def test_bad_hear_module_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    rc = bench_main(["run", "--upstream", "hear:no_such_pkg.hear_module", "--task", "icbhi", "--profile", "tiny",
                     "--results", str(tmp_path / "results"), "--cache-root", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "cannot import HEAR module" in err


# -- s3prl: its own registry ---------------------------------------------------------------------------

@pytest.mark.interop
def test_s3prl_fbank_matches_suite_fbank_states_and_score(tiny_root, tmp_path):
    ours = upstreams.load("fbank", deltas=2, cmvn=True)
    theirs = upstreams.load("s3prl:fbank")
    assert (theirs.downsample_rate, theirs.num_layers, theirs.hidden_sizes) == (160, 1, [240])
    wavs = _wavs(1.0, 0.37, 2.5)
    a, b = theirs(wavs), ours(wavs)
    assert a.lengths.tolist() == b.lengths.tolist()
    torch.testing.assert_close(a.hidden_states[0], b.hidden_states[0])
    assert theirs.describe()["s3prl"]["entry"] == "fbank" and theirs.describe()["s3prl"]["version"] == "0.4.18"

    r_ours, _ = run(_req(tiny_root, tmp_path, upstream="fbank", upstream_options={"deltas": 2, "cmvn": True},
                         task="esc50", protocol="linear"), log=lambda _m: None)
    r_theirs, _ = run(_req(tiny_root, tmp_path, upstream="s3prl:fbank", task="esc50", protocol="linear"),
                      log=lambda _m: None)
    assert r_theirs.score == r_ours.score and r_theirs.lr == r_ours.lr
    feats = _cached_features(tmp_path / "cache")
    assert np.array_equal(np.frombuffer(feats["s3prl:fbank"], np.float16), np.frombuffer(feats["fbank"], np.float16))


@pytest.mark.interop
@pytest.mark.parametrize("name", ["hubert_base", "hubert", "wav2vec2", "wav2vec2_base_960", "distilhubert"])
def test_s3prl_names_that_download_are_refused(name, monkeypatch):
    from s3prl.util import download

    monkeypatch.setattr(download, "_download", lambda *a, **k: pytest.fail("s3prl tried to download"))
    with pytest.raises(CheckpointError, match=r"nothing is downloaded here: pass --ckpt PATH") as info:
        upstreams.load(f"s3prl:{name}")
    _one_line_error(info)


@pytest.mark.interop
def test_s3prl_refusals_on_the_command_line(tmp_path, capsys):
    common = ["--task", "icbhi", "--profile", "tiny", "--results", str(tmp_path / "r"), "--cache-root", str(tmp_path / "c")]
    assert bench_main(["run", "--upstream", "s3prl:hubert_base", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pass --ckpt PATH" in err
    with pytest.raises(UnknownUpstreamError, match="did you mean hubert"):
        upstreams.load("s3prl:hubbert")
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"")
    with pytest.raises(OptionError, match="has no weights; drop --ckpt"):
        upstreams.load("s3prl:fbank", ckpt=str(ckpt))
    with pytest.raises(CheckpointError, match="no local-checkpoint entry"):
        upstreams.load("s3prl:byol_a_2048", ckpt=str(ckpt))


@pytest.mark.interop
def test_s3prl_registry_plan_covers_every_name():
    from upstreams.s3prl_upstream import CONFIG_ONLY, DIRECT_CKPT, WEIGHT_FREE, hub_entries, plan

    entries = hub_entries()
    assert len(entries) > 150 and set(WEIGHT_FREE) <= set(entries)
    routed = {}
    for name in entries:
        if name in WEIGHT_FREE or name in CONFIG_ONLY:
            assert plan(name, None, entries)[0] == name
            continue
        with pytest.raises(CheckpointError, match="--ckpt PATH"):
            plan(name, None, entries)
        try:
            routed[name] = plan(name, "local.pt", entries)[0]
        except CheckpointError as exc:
            assert "no local-checkpoint entry" in str(exc)
            continue
        assert routed[name].endswith(("_custom", "_local")) or routed[name] in DIRECT_CKPT, (name, routed[name])
    assert routed["hubert_base"] == routed["hubert_large_ll60k"] == "hubert_custom"
    assert routed["wav2vec2_base_960"] == routed["xls_r_300m"] == "wav2vec2_custom"
    assert routed["distilhubert"] == "distiller_local" and routed["tera"] == "tera_local"
    assert routed["apc_url"] == "apc_local" and routed["mos_tera"] == "mos_tera_local"


@pytest.mark.interop
def test_s3prl_local_hubert_checkpoint(tmp_path):
    """`s3prl:hubert_base --ckpt PATH` loads local weights through hubert_custom; every hidden state is a layer."""
    from upstreams import s3prl_compat

    s3prl_compat.patch()
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    model_cfg = HubertConfig(label_rate=50, conv_feature_layers="[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
                             encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                             encoder_attention_heads=2, final_dim=16, conv_pos=16, conv_pos_groups=4)
    task_cfg = HubertPretrainingConfig(label_rate=50)
    torch.manual_seed(0)
    model = HubertModel(model_cfg, task_cfg, [["a", "b"]])
    path = tmp_path / "tiny_hubert.pt"
    torch.save({"task_cfg": dataclasses.asdict(task_cfg), "model_cfg": dataclasses.asdict(model_cfg),
                "model_weight": model.state_dict(), "dictionaries_symbols": [["a", "b"]]}, path)

    up = upstreams.load("s3prl:hubert_base", ckpt=str(path))
    assert up.describe()["s3prl"]["entry"] == "hubert_custom"
    assert up.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (up.downsample_rate, up.num_layers, up.hidden_sizes) == (320, 3, [32, 32, 32])  # input + 2 blocks
    a, b = _wavs(1.0, 0.5)
    with torch.no_grad():
        out, alone = up([a, b]), up([b])
    assert out.lengths.tolist() == [49, 24] and alone.lengths.tolist() == [24]
    for layer in range(3):  # per-item encoding: an item's features do not depend on its batch
        torch.testing.assert_close(out.hidden_states[layer][1, :24], alone.hidden_states[layer][0])


def test_prefixes_resolve_first_and_are_listed(capsys):
    assert upstreams.info("hear:hearbaseline.naive").source == "hear"
    inf = upstreams.info("s3prl:hubert_base")
    assert inf.source == "s3prl" and inf.needs_checkpoint and not upstreams.info("s3prl:fbank").needs_checkpoint
    assert bench_main(["list", "upstreams"]) == 0
    out = capsys.readouterr().out
    assert "hear:PKG.MODULE" in out and "s3prl:NAME" in out
