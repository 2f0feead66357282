"""Libraries kept where they do the job: tensorboardX for TensorBoard events (no TensorFlow in the
process), safetensors for `bench export`, jiwer as the WER/CER reference (tests only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import upstreams
from bench.cli import main as bench_main
from upstreams.errors import CheckpointError
from upstreams.fileio import sha256_file
from upstreams.training.run import pretrain

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A 3-step tiny M2D pretraining run on 8 synthetic tone clips."""
    root = tmp_path_factory.mktemp("kept")
    (root / "audio").mkdir()
    rows = ["path,start,stop,label,source"]
    rng = np.random.default_rng(0)
    for i in range(8):
        t = np.arange(int(16000 * (1.0 + (i % 4) * 0.5))) / 16000
        x = 0.3 * np.sin(2 * np.pi * (200 + 100 * (i % 6)) * t) + rng.normal(0, 0.01, t.size)
        sf.write(root / "audio" / f"{i}.wav", x.astype(np.float32), 16000)
        rows.append(f"audio/{i}.wav,,,{'low' if i % 2 else 'high'},synthetic")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    threads = torch.get_num_threads()
    try:
        run = pretrain("m2d", "tiny", out=str(root / "runs" / "m2d" / "tiny"), log=lambda _m: None,
                       overrides={"data": {"index": str(root / "index.csv"), "cache_dir": str(root / "cache")},
                                  "train": {"steps": 3, "warmup_steps": 1, "threads": 1, "tensorboard": True}})
    finally:
        torch.set_num_threads(threads)
    return Path(run.checkpoint)


def _wavs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(16000, generator=g) * 0.1, torch.randn(23456, generator=g) * 0.1]


# -- tensorboardX ----------------------------------------------------------------------------------
def test_tensorboard_writer_keeps_tensorflow_out_of_the_process(tmp_path):
    code = (
        "import sys; from upstreams.training.log import RunLog\n"
        f"log = RunLog({str(tmp_path)!r}, enabled=True)\n"
        "log.write({'step': 1, 'loss': 0.5, 'lr': 1e-3}); log.close()\n"
        "print('tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
    files = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(files) == 1 and b"loss" in files[0].read_bytes()


# -- bench export / safetensors --------------------------------------------------------------------
def test_export_round_trips_the_upstream_exactly(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "m2d-tiny.safetensors"
    assert bench_main(["export", str(tiny_ckpt), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out

    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as fh:
        meta = fh.metadata()
        keys = set(fh.keys())
    bundle = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    assert keys == set(bundle["encoder"])  # the upstream weights only: no optimiser, predictor or target
    assert json.loads(meta["encoder_config"]) == bundle["encoder_config"]
    assert json.loads(meta["frontend_config"]) == bundle["frontend_config"]
    assert json.loads(meta["norm_stats"]) == pytest.approx(bundle["norm_stats"])
    assert json.loads(meta["method"]) == "m2d"
    assert json.loads(meta["source_sha256"]) == sha256_file(tiny_ckpt)

    a = upstreams.load("m2d", ckpt=tiny_ckpt).eval()
    b = upstreams.load("m2d", ckpt=out).eval()
    assert b.source_checkpoint_sha256 == sha256_file(tiny_ckpt) and b.checkpoint_sha256 == sha256_file(out)
    with torch.no_grad():
        ha, hb = a(_wavs()), b(_wavs())
    assert torch.equal(ha.lengths, hb.lengths) and len(ha.hidden_states) == len(hb.hidden_states)
    for x, y in zip(ha.hidden_states, hb.hidden_states):
        assert torch.equal(x, y)


def _bad_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    from safetensors.torch import save_file

    data = good.read_bytes()
    files = {"truncated": data[: len(data) // 2], "garbage": b"\x00\x01 not safetensors at all" * 10}
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.safetensors"
        paths[name].write_bytes(content)
    paths["no-metadata"] = tmp_path / "no-metadata.safetensors"
    save_file({"w": torch.zeros(2)}, str(paths["no-metadata"]))
    return paths


def test_corrupt_or_foreign_safetensors_is_one_clear_line(tiny_ckpt, tmp_path, capsys):
    good = tmp_path / "good.safetensors"
    assert bench_main(["export", str(tiny_ckpt), str(good)]) == 0
    capsys.readouterr()
    for name, path in _bad_files(tmp_path, good).items():
        with pytest.raises(CheckpointError):
            upstreams.load("m2d", ckpt=path)
        assert bench_main(["export", str(path), str(tmp_path / "again.safetensors")]) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and "Traceback" not in err, (name, err)
    assert not (tmp_path / "again.safetensors").exists()


def test_export_refuses_another_suffix(tiny_ckpt, tmp_path, capsys):
    assert bench_main(["export", str(tiny_ckpt), str(tmp_path / "x.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err
