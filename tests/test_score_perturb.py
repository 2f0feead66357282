"""SCORE perturbations keep duration (pitch shift) and move pitch by the requested amount."""

from __future__ import annotations

import math

import pytest
import torch

from upstreams.score.perturb import perturb, pitch_shift, speed

SR = 16000


def _tone(f0: float, seconds: float = 1.5) -> torch.Tensor:
    t = torch.arange(int(SR * seconds)) / SR
    return torch.sin(2 * math.pi * f0 * t) + 0.5 * torch.sin(2 * math.pi * 2 * f0 * t)


def _f0(x: torch.Tensor) -> float:
    spec = torch.fft.rfft(x * torch.hann_window(len(x)), n=8 * len(x)).abs()
    lo = int(80 * 8 * len(x) / SR)  # ignore DC
    return (lo + int(spec[lo:].argmax())) * SR / (8 * len(x))


@pytest.mark.parametrize("semitones", [-2.0, -0.7, 1.0, 2.0])
def test_pitch_shift_moves_f0_and_keeps_duration(semitones):
    x = _tone(220.0)
    y = pitch_shift(x, semitones)
    assert y.shape == x.shape
    expected = 220.0 * 2 ** (semitones / 12)
    assert abs(_f0(y) - expected) < 0.01 * expected  # within ~17 cents


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_scales_duration_and_pitch(factor):
    x = _tone(200.0)
    y = speed(x, factor)
    assert abs(len(y) - len(x) / factor) <= 2
    assert abs(_f0(y) - 200.0 * factor) < 0.01 * 200.0 * factor


def test_perturb_stays_within_bounds_and_is_seeded():
    x = _tone(200.0, 1.0)
    for seed in range(6):
        y = perturb(x, torch.Generator().manual_seed(seed))
        ratio = len(x) / len(y)
        assert min(abs(ratio - s) for s in (0.9, 1.0, 1.1)) < 0.01
        # pitch = speed factor x 2^(+-2/12): one of six values
        speed_factor = min((0.9, 1.0, 1.1), key=lambda s: abs(ratio - s))
        candidates = [200 * speed_factor * 2 ** (k / 12) for k in (-2, 2)]
        assert min(abs(_f0(y) - c) / c for c in candidates) < 0.01
        again = perturb(x, torch.Generator().manual_seed(seed))
        assert torch.equal(y, again)
