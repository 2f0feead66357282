"""Deterministic audio augmentation for the mini-benchmark builders: rooms, gain, noise, crops.

Every function takes its randomness as an explicit `np.random.Generator` (from
`BuildContext.rng(...)`), so the same seed gives byte-identical audio whatever the number of
worker processes. Room impulse responses come from pyroomacoustics' image-source `ShoeBox`
(Allen & Berkley 1979), computed once per build into a small bank and reused by every clip,
because computing a 44.1 kHz RIR per clip would dominate the build time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _signal():
    """scipy.signal, imported on first use: it costs seconds, and most imports of this module
    (checking whether a dataset is current) never filter anything."""
    import scipy.signal

    return scipy.signal

__all__ = [
    "RoomBank",
    "make_room_bank",
    "apply_room",
    "coloured_noise",
    "mix_at_snr",
    "random_crop",
    "db_to_gain",
    "peak_limit",
    "to_pcm16",
]


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


@dataclass(frozen=True)
class RoomBank:
    sample_rate: int
    rirs: tuple[np.ndarray, ...]
    descriptions: tuple[str, ...]  # room size and RT60 target, for the dataset README


def make_room_bank(rng: np.random.Generator, sample_rate: int, n_rooms: int = 6) -> RoomBank:
    """`n_rooms` ShoeBox RIRs: rooms 3-12 m wide, RT60 0.15-0.8 s, random source/mic placement."""
    import pyroomacoustics as pra  # imported lazily: it pulls in matplotlib-free but heavy modules

    rirs, desc = [], []
    for _ in range(n_rooms):
        dims = np.array([rng.uniform(3, 12), rng.uniform(3, 9), rng.uniform(2.4, 4.0)])
        rt60 = rng.uniform(0.15, 0.8)
        absorption, max_order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(
            dims,
            fs=sample_rate,
            materials=pra.Material(absorption),
            max_order=min(int(max_order), 12),  # bound the image count: late tail matters little here
            use_rand_ism=False,
        )
        src = dims * rng.uniform(0.2, 0.8, size=3)
        mic = dims * rng.uniform(0.2, 0.8, size=3)
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        h = np.asarray(room.rir[0][0], dtype=np.float64)
        h = h[np.argmax(np.abs(h)) :]  # drop the propagation delay so the event stays in place
        h = h[: int(0.8 * sample_rate)]
        h /= np.sqrt(np.sum(h**2)) + 1e-12
        rirs.append(h.astype(np.float32))
        desc.append(f"{dims[0]:.1f}x{dims[1]:.1f}x{dims[2]:.1f} m, RT60 {rt60:.2f} s")
    return RoomBank(sample_rate, tuple(rirs), tuple(desc))


def apply_room(x: np.ndarray, rir: np.ndarray, wet: float) -> np.ndarray:
    """Mix the dry signal with its reverberant version (`wet` in [0, 1]), keeping the length and RMS."""
    y = _signal().fftconvolve(x.astype(np.float64), rir.astype(np.float64))[: len(x)]
    out = (1 - wet) * x + wet * y * (rms(x) / rms(y))
    return out.astype(np.float32)


def coloured_noise(rng: np.random.Generator, n: int, colour: str = "pink") -> np.ndarray:
    """Unit-RMS white, pink (1/f, Kellet's filter) or brown (1/f^2) noise of `n` samples."""
    w = rng.standard_normal(n)
    if colour == "white":
        y = w
    elif colour == "pink":
        b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
        a = [1, -2.494956002, 2.017265875, -0.522189400]
        y = _signal().lfilter(b, a, w)
    elif colour == "brown":
        y = _signal().lfilter([1.0], [1.0, -0.995], w)
    else:
        raise ValueError(f"unknown noise colour '{colour}'")
    y = y - y.mean()
    return (y / rms(y)).astype(np.float32)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + noise scaled so that 10 log10(P_signal / P_noise) = snr_db (noise tiled/cut to fit)."""
    if len(noise) < len(signal):
        noise = np.tile(noise, int(np.ceil(len(signal) / max(1, len(noise)))))
    noise = noise[: len(signal)]
    scale = rms(signal) / (rms(noise) * db_to_gain(snr_db))
    return (signal + scale * noise).astype(np.float32)


def random_crop(rng: np.random.Generator, x: np.ndarray, length: int) -> np.ndarray:
    """A `length`-sample window at a random offset (the whole signal when it is shorter)."""
    if len(x) <= length:
        return x
    start = int(rng.integers(0, len(x) - length + 1))
    return x[start : start + length]


def peak_limit(x: np.ndarray, peak: float = 0.98) -> np.ndarray:
    """Scale down (never up) so that max |x| <= peak: clipping would add artefacts no real clip has."""
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    return x * (peak / m) if m > peak else x


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 with rounding (explicit, so every platform writes the same bytes)."""
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
