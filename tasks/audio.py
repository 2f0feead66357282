"""The one place where audio files become model-ready waveforms.

Every loader (mini-benchmark or real corpus) goes through `read_audio`, so down-mixing,
resampling and the handling of broken files behave identically for ESC-50 at 44.1 kHz, ICBHI's
mixed rates, QUESST's 8 kHz and Speech Commands' short clips. soundfile is used rather than
`torchaudio.load`, which needs torchcodec on torchaudio >= 2.9.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

__all__ = ["AudioReadError", "REMEDY", "read_audio", "resample", "audio_info", "fixed_length", "non_finite_problem"]

# What to do about a file that cannot be used as audio; every AudioReadError message ends with it.
REMEDY = "re-export it as 16-bit PCM WAV/FLAC (or restore it), or pass --skip-bad to leave it out"
MISSING_REMEDY = "restore it, or pass --skip-bad to leave it out"
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only sample formats that can hold NaN or infinity


class AudioReadError(ValueError):
    """A file that cannot be used as audio; the message names the file and what to do."""


def non_finite_problem(fh: sf.SoundFile, chunk: int = 1 << 18) -> str | None:
    """Why an open file's samples are not all finite, or None. Only float files are read (integer PCM
    cannot hold NaN or infinity), so checking a corpus of 16-bit files costs nothing."""
    if fh.subtype not in FLOAT_SUBTYPES:
        return None
    fh.seek(0)
    pos = 0
    while pos < fh.frames:
        block = fh.read(frames=min(chunk, fh.frames - pos), dtype="float32", always_2d=True)
        if not len(block):
            break
        bad = ~np.isfinite(block)
        if bad.any():
            first = pos + int(np.argmax(bad.any(axis=1)))
            return f"contains NaN or infinite samples (first at {first / fh.samplerate:.3f} s)"
        pos += len(block)
    return None


@functools.lru_cache(maxsize=32)
def _resampler(orig_sr: int, new_sr: int) -> torchaudio.transforms.Resample:
    # The transform caches its sinc kernel; building it per file would dominate short-clip loading.
    return torchaudio.transforms.Resample(orig_sr, new_sr)


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample `(..., time)` float audio with torchaudio's windowed-sinc kernel (cached per rate pair)."""
    if orig_sr == new_sr:
        return wav
    return _resampler(int(orig_sr), int(new_sr))(wav)


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    try:
        return sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError / LibsndfileError / TypeError
        raise AudioReadError(f"{path}: not a readable audio file ({exc}); {REMEDY}") from exc


def read_audio(
    path: str | os.PathLike,
    target_sr: int | None = None,
    *,
    start: float | None = None,
    stop: float | None = None,
) -> tuple[torch.Tensor, int]:
    """Read `path` as a mono float32 waveform `(time,)`, optionally a `[start, stop)` slice in seconds.

    Returns the waveform and its sample rate (`target_sr` when given). Raises `AudioReadError`
    naming the file when it is missing, corrupt, truncated to nothing, or contains non-finite samples.
    """
    path = Path(path)
    if not path.exists():
        raise AudioReadError(f"{path}: file not found; {MISSING_REMEDY}")
    try:
        with sf.SoundFile(str(path)) as fh:
            sr = fh.samplerate
            begin = 0 if start is None else max(0, int(round(start * sr)))
            end = fh.frames if stop is None else min(fh.frames, int(round(stop * sr)))
            if begin:
                fh.seek(begin)
            data = fh.read(frames=max(0, end - begin), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioReadError(f"{path}: not a readable audio file ({exc}); {REMEDY}") from exc
    if data.shape[0] == 0:
        raise AudioReadError(f"{path}: contains no audio samples (empty or truncated file); {REMEDY}")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioReadError(f"{path}: contains NaN or infinite samples; {REMEDY}")
    wav = torch.from_numpy(np.ascontiguousarray(mono))
    if target_sr is not None and target_sr != sr:
        wav = resample(wav, sr, target_sr)
        sr = target_sr
    return wav, sr


def fixed_length(wav: torch.Tensor, num_samples: int, pad_mode: str = "repeat") -> torch.Tensor:
    """Crop `(time,)` to its first `num_samples`, or pad it up to them.

    `repeat` tiles the clip (the usual practice for ICBHI cycles, so a short cycle is not diluted
    by silence); `zero` appends zeros.
    """
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    n = wav.shape[-1]
    if n >= num_samples:
        return wav[..., :num_samples]
    if pad_mode == "repeat":
        reps = -(-num_samples // n)
        return wav.repeat(*([1] * (wav.dim() - 1)), reps)[..., :num_samples]
    if pad_mode == "zero":
        return torch.nn.functional.pad(wav, (0, num_samples - n))
    raise ValueError(f"pad_mode must be 'repeat' or 'zero', got {pad_mode!r}")
