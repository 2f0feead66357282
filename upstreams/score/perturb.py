"""SCORE's content-preserving perturbations: speed change, then pitch shift (Meghanani & Hain, ICASSP 2024).

`speed` resamples (duration and pitch both scale, like sox `speed`); `pitch_shift` changes pitch
while keeping duration: a phase-vocoder time stretch by the pitch ratio followed by resampling
back. torchaudio's own `pitch_shift` resamples between 16000 and int(16000 / ratio) Hz, whose
tiny gcd builds a huge sinc kernel (about 30 s per call here); approximating the ratio by a
fraction with a small denominator (2^(2/12) ~ 55/49, error < 0.01 cent) makes it milliseconds.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
import torchaudio
import torchaudio.functional as AF
from torch import Tensor

__all__ = ["speed", "pitch_shift", "perturb", "SPEEDS", "SEMITONES"]

SPEEDS = (0.9, 1.0, 1.1)
SEMITONES = 2.0

_N_FFT, _HOP = 512, 128


def _ratio(value: float, max_denominator: int = 64) -> Fraction:
    return Fraction(value).limit_denominator(max_denominator)


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    # the transform caches its sinc kernel; building it costs more than applying it
    return torchaudio.transforms.Resample(orig, new)


def _resample(wav: Tensor, ratio: Fraction) -> Tensor:
    return _resampler(ratio.numerator, ratio.denominator).to(wav.device)(wav)


def speed(wav: Tensor, factor: float) -> Tensor:
    """Play `(time,)` audio `factor` times faster: duration / factor, pitch x factor."""
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    if factor == 1.0:
        return wav
    return _resample(wav, _ratio(factor))


def pitch_shift(wav: Tensor, semitones: float) -> Tensor:
    """Shift pitch by `semitones` keeping the duration (to within one sample)."""
    if semitones == 0:
        return wav
    r = _ratio(2.0 ** (semitones / 12.0))
    n = wav.shape[-1]
    window = torch.hann_window(_N_FFT, device=wav.device)
    spec = torch.stft(wav, _N_FFT, _HOP, window=window, return_complex=True)
    advance = torch.linspace(0, math.pi * _HOP, spec.shape[-2], device=wav.device)[..., None]
    stretched = AF.phase_vocoder(spec, rate=float(1 / r), phase_advance=advance)  # duration x r
    longer = torch.istft(stretched, _N_FFT, _HOP, window=window, length=round(n * float(r)))
    out = _resample(longer, r)  # duration / r, pitch x r
    if out.shape[-1] >= n:
        return out[..., :n]
    return torch.nn.functional.pad(out, (0, n - out.shape[-1]))


def perturb(wav: Tensor, generator: torch.Generator, speeds=SPEEDS, semitones: float = SEMITONES) -> Tensor:
    """A random speed from `speeds`, then a pitch shift of +`semitones` or -`semitones` (even odds).

    As in SCORE's data pipeline (Trikaldarshi/SCORE_Finetuning `dataset.py`): SpeedPerturbation
    over {0.9, 1.0, 1.1}, then PitchShift by exactly +2 or -2 semitones.
    """
    s = speeds[int(torch.randint(len(speeds), (1,), generator=generator))]
    sign = 1.0 if int(torch.randint(2, (1,), generator=generator)) else -1.0
    return pitch_shift(speed(wav, s), sign * semitones)
