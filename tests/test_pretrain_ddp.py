"""Multi-process smoke tests: `torchrun --standalone --nproc_per_node 2 -m bench.cli pretrain ...` on CPU (gloo).

They run the real CLI on the `tiny` data profile (`tiny_root`) exactly as a user would under torchrun
(`python -m torch.distributed.run` is torchrun with this interpreter) and check what DDP must guarantee:
both ranks train (each reports its micro-batches), the world size is recorded in the log and the
checkpoint, only rank 0 writes the checkpoint (once per interval), the loss is finite, a 2-process run
stopped half way resumes with 2 processes, and the result equals one process doing the same global
batch by gradient accumulation. M2D-X (noise, distillation, supervised task) gets a shorter check.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from upstreams.training.log import read_log
from upstreams.training.run import pretrain

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

RUN_FILES = {"checkpoint.pt", "config.yaml", "log.jsonl", "loss.png", "tb"}


@pytest.fixture(autouse=True)
def _data(tiny_root, monkeypatch):
    """In-process runs read the same tiny corpora as the subprocesses; `train` changes the thread count."""
    monkeypatch.setenv("BENCH_DATA", str(tiny_root))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _torchrun(tiny_root: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "BENCH_DATA": str(tiny_root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bench.cli", "pretrain", *args, "--set", "train.threads=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def _rank_reports(output: str, method: str) -> dict[int, tuple[int, int, int]]:
    """rank -> (micro-batches, clips per micro-batch, checkpoint writes), from each rank's closing line."""
    found = re.findall(rf"{method}: rank (\d)/2 done: (\d+) micro-batches of (\d+) clips, (\d+) checkpoint write", output)
    return {int(r): (int(n), int(b), int(c)) for r, n, b, c in found}


def _check_run_dir(out: Path, steps: list[int]) -> list[dict]:
    assert {p.name for p in out.iterdir()} == RUN_FILES  # no temporary files left by the atomic writes
    rows = read_log(out / "log.jsonl")
    assert [r["step"] for r in rows] == steps  # one line per step, written once (by rank 0)
    assert all(r["world_size"] == 2 and math.isfinite(r["loss"]) for r in rows), rows
    return rows


def test_torchrun_m2d_two_ranks_then_resume_with_two_ranks(tiny_root, tmp_path):
    out = tmp_path / "ddp"
    # batch 8 = 2 ranks x micro-batch 4; stop after 4 of 8 steps (a planned kill), checkpoint_every is 10
    first = _torchrun(tiny_root, "m2d", "--config", "tiny", "--out", str(out), "--steps", "8",
                      "--set", "train.micro_batch=4", "--set", "train.stop_after=4")
    assert "(2 process(es), cpu)" in first
    assert _rank_reports(first, "m2d") == {0: (4, 4, 1), 1: (4, 4, 0)}, first
    _check_run_dir(out, [1, 2, 3, 4])
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["total_steps"] == 8 and ckpt["world_size"] == 2
    assert ckpt["data"] == {"samples_seen": 32, "epoch": pytest.approx(32 / 54), "micro_batch": 4, "accumulation": 1}
    assert ckpt["config"]["train"]["steps"] == 8 and ckpt["config"]["train"]["batch_size"] == 8  # full config
    assert len(ckpt["rng_ranks"]) == 2  # each rank's RNG was gathered...
    assert not torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])  # ...and they differ

    second = _torchrun(tiny_root, "m2d", "--resume", "--out", str(out))
    assert _rank_reports(second, "m2d") == {0: (4, 4, 1), 1: (4, 4, 0)}, second
    rows = _check_run_dir(out, list(range(1, 9)))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 8 and ckpt["world_size"] == 2

    # one process, same global batch by accumulation (2 x 4), uninterrupted: the same training
    single = pretrain("m2d", "tiny", out=str(tmp_path / "single"), log=lambda _m: None,
                      overrides={"train": {"steps": 8, "micro_batch": 4, "threads": 1}})
    ref_rows = read_log(single.log)
    assert all(r["world_size"] == 1 for r in ref_rows)
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in ref_rows], rtol=1e-4)
    ref = torch.load(single.checkpoint, weights_only=True)
    assert ref["data"]["accumulation"] == 2
    for k, v in ref["model"].items():
        torch.testing.assert_close(ckpt["model"][k], v, atol=1e-4, rtol=1e-3, msg=k)


def test_torchrun_m2dx_two_ranks(tiny_root, tmp_path):
    init = pretrain("m2d", "tiny", out=str(tmp_path / "m2d"), log=lambda _m: None,
                    overrides={"train": {"steps": 2, "warmup_steps": 1, "threads": 1}})
    out = tmp_path / "m2dx"
    output = _torchrun(tiny_root, "m2dx", "--config", "tiny_supervised", "--init", str(init.checkpoint), "--out", str(out),
                       "--steps", "6", "--set", "train.micro_batch=4")
    assert _rank_reports(output, "m2dx") == {0: (6, 4, 1), 1: (6, 4, 0)}, output
    rows = _check_run_dir(out, list(range(1, 7)))
    for key in ("loss_m2d", "loss_distill", "loss_sup"):
        assert all(math.isfinite(r[key]) for r in rows), key
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["method"] == "m2dx" and ckpt["label_names"]
    assert ckpt["config"]["noise"]["eta"] == 0.3 and ckpt["config"]["init"] == str(init.checkpoint)
