"""`scripts/gpu_check.sh` on a machine without CUDA: one "no GPU" line, the CPU self-check, exit 0."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _carried_corpus(root: Path) -> Path:
    """A minimal gpu_corpus/ (train + probe) in the prebuilt format, for the self-check to verify."""
    from upstreams.frontend import LogMelConfig
    from upstreams.m2d.prebuilt import write_prebuilt

    fe = LogMelConfig()
    write_prebuilt(root / "train", [torch.zeros(fe.n_mels, 20)], fe)
    write_prebuilt(root / "probe", [torch.zeros(fe.n_mels, 5)] * 2, fe, labels=["a", "b"], sets=["esc50"] * 2)
    return root


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run the GPU path")
def test_gpu_check_without_gpu_exits_zero(tmp_path):
    # with a carried corpus (GPU_CORPUS): the self-check also verifies its manifests and front end
    env = {**os.environ, "GPU_CORPUS": str(_carried_corpus(tmp_path / "gpu_corpus"))}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, timeout=150,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "no GPU" in line]
    assert len(lines) == 1, proc.stdout
    assert "CPU self-check passed" in proc.stdout
    assert not (REPO / "gpu_report.md").exists() or "gpu_report.md" not in proc.stdout


def test_gpu_scripts_parse():
    for script in ("scripts/gpu_check.sh", "scripts/gpu_wheelhouse.sh", "scripts/gpu_corpus.sh"):
        subprocess.run(["bash", "-n", script], cwd=REPO, check=True, timeout=10)
