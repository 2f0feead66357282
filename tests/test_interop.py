"""Interop with the real tools: hear-validator 2021.0.6 (subprocess) and s3prl 0.4.18."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

import upstreams
from upstreams.s3prl_adapter import S3prlUpstream, featurizer

pytestmark = pytest.mark.interop


def _validator() -> str:
    exe = shutil.which("hear-validator")
    if exe is None:
        pytest.fail("hear-validator is not installed: run `make setup` (installs hearvalidator==2021.0.6 and tensorflow-cpu)")
    return exe


@pytest.mark.parametrize("name", ["fbank", "random"])
def test_hear_validator_passes(name):
    """The real validator imports `upstreams.hear.<name>` in its own process (it imports TensorFlow)."""
    proc = subprocess.run(
        [_validator(), f"upstreams.hear.{name}", "-d", "cpu"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Looks good!" in proc.stdout


def test_hear_module_for_unregistered_name_is_not_importable():
    with pytest.raises(ModuleNotFoundError):
        __import__("upstreams.hear.no_such_upstream")


def test_hear_timestamps_inside_clip_and_even():
    import upstreams.hear.random as hear

    model = hear.load_model()
    for seconds in (1.07, 1.98, 4.0):
        audio = torch.rand(2, int(seconds * 16000)) * 2 - 1
        emb, ts = hear.get_timestamp_embeddings(audio, model)
        assert emb.dtype == torch.float32 and emb.shape[:2] == ts.shape
        diffs = ts[0, 1:] - ts[0, :-1]
        assert float((diffs - diffs.mean()).abs().max()) < 1e-3
        assert float(ts.max()) <= seconds * 1000


@pytest.mark.parametrize("name", ["fbank", "random"])
def test_s3prl_featurizer_and_downstream(name):
    """s3prl's own Featurizer weights our layers, and its own utterance-level model trains on the result."""
    up = upstreams.load(name, **({"arch": "tiny"} if name == "random" else {})).eval()
    adapter, fz = featurizer(up)
    from s3prl.downstream.model import UtteranceLevel

    wavs = [torch.randn(16000) * 0.1, torch.randn(12345) * 0.1]
    with torch.no_grad():
        feats = fz(wavs, adapter(wavs))
    assert [f.shape[-1] for f in feats] == [up.hidden_sizes[-1]] * 2
    if up.num_layers > 1:
        assert fz.weights.shape == (up.num_layers,)
    head = UtteranceLevel(input_dim=fz.output_dim, output_dim=3, pooling="MeanPooling")
    with torch.no_grad():
        hidden = adapter(wavs)  # frozen upstream: extract once, train Featurizer + head
    opt = torch.optim.Adam(list(head.parameters()) + list(fz.parameters()), lr=1e-3)
    losses = []
    for _ in range(10):
        feats = fz(wavs, hidden)
        lens = torch.tensor([len(f) for f in feats])
        logits, _ = head(torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lens)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    if up.num_layers > 1:
        assert fz.weights.grad is not None  # the layer weights are learned through s3prl's code


def test_fbank_superb_options_match_s3prl_baseline():
    """`fbank(deltas=2, cmvn=True)` reproduces s3prl's own FBANK extracter exactly."""
    from upstreams import s3prl_compat

    s3prl_compat.patch()
    from s3prl.upstream.baseline.extracter import get_extracter
    import yaml
    import s3prl.upstream.baseline as baseline
    from pathlib import Path

    cfg = yaml.safe_load((Path(baseline.__file__).parent / "fbank.yaml").read_text())
    extracter, dim, _ = get_extracter(cfg)
    wav = torch.randn(20000) * 0.1
    ref = extracter(wav)
    ours = upstreams.load("fbank", deltas=2, cmvn=True)([wav]).hidden_states[0][0]
    assert ours.shape == ref.shape == (ref.shape[0], dim)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_compat_blocks_tensorflow_in_process():
    code = (
        "from upstreams import s3prl_compat; s3prl_compat.patch(); import s3prl.hub;"
        "import sys; assert sys.modules.get('tensorflow') is None; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
