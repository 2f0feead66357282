"""`scripts/gpu_check.sh` on a machine without CUDA: one "no GPU" line, the CPU self-check, exit 0."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run the GPU path")
def test_gpu_check_without_gpu_exits_zero():
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "no GPU" in line]
    assert len(lines) == 1, proc.stdout
    assert "CPU self-check passed" in proc.stdout
    assert not (REPO / "gpu_report.md").exists() or "gpu_report.md" not in proc.stdout


def test_gpu_scripts_parse():
    for script in ("scripts/gpu_check.sh", "scripts/gpu_wheelhouse.sh"):
        subprocess.run(["bash", "-n", script], cwd=REPO, check=True, timeout=10)
