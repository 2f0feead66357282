"""A parametric simulator of auscultated lung sounds, for the ICBHI-layout mini-benchmark.

No respiratory recordings exist in Debian, so this module synthesises them from the acoustic
descriptions in the lung-sound literature. Every component is a pure function with explicit
parameters and an explicit random generator, so it can be tested by measuring its output.

Grounding (parameter values below cite these):
- Kompis M, Russi EW. "Adding artificial breath sounds to lung sounds: a parametric simulator that
  physicians rated as realistic." Technol Health Care 1997. The overall structure follows it:
  flow-modulated filtered noise for the normal sound, plus parametric adventitious events.
- Normal (vesicular) sound: noise with most energy between 100 and 200-600 Hz and a spectrum
  falling with frequency above a corner (Gavriely et al. 1981, Pasterkamp et al. 1997); its
  intensity follows airflow; expiration is quieter and shorter-sounding than inspiration;
  tracheal sound is louder and broader (Pasterkamp et al. 1997, CORSA guidelines, Sovijarvi 2000).
- Crackles: short explosive transients that start with a sharp initial deflection followed by a
  damped oscillation whose period lengthens. Fine crackles: ~650 Hz, ~5 ms (two-cycle duration
  < 10 ms); coarse crackles: ~350 Hz, ~15 ms (Hoevers & Loudon 1990; Piirila & Sovijarvi 1995;
  Murphy 2007). Fine crackles cluster in mid-to-late inspiration, coarse ones in early inspiration
  and in expiration; about twice as many occur in inspiration as in expiration (Piirila 1995).
- Wheezes: continuous, nearly sinusoidal sounds lasting more than 80-250 ms with a dominant
  frequency of 100-1000+ Hz and harmonics, mostly expiratory in asthma/COPD (Sovijarvi et al.
  2000, CORSA; Meslier 1995). Rhonchi: low-pitched (< 200 Hz) snoring-like continuous sounds
  with strong harmonics; ICBHI annotators marked continuous adventitious sounds as wheezes.
- Heart sounds S1/S2: low-frequency (20-150 Hz) transients, S2 about 0.3 s after S1 at rest.
- Stethoscope and microphone responses: acoustic stethoscopes with a tube microphone pass roughly
  100-1000 Hz; electronic ones (Littmann 3200, WelchAllyn Meditron) 20-2000 Hz at 4 kHz sampling;
  the AKG C417L lavalier condenser microphone is wideband and picks up more room noise. Devices
  are those of the ICBHI database (Rocha et al. 2019, Physiol. Meas.); their sample rates are as
  read from the real WAV headers: AKGC417L and LittC2SE at 44.1 kHz, Litt3200 at 4 kHz, Meditron
  at 4 or 10 kHz. The frequency responses are plausible approximations, not measured ones.

Units: times in seconds, frequencies in Hz, levels in dB. Signals are float32 `(time,)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _signal():
    """scipy.signal, imported on first use: it costs seconds, and most imports of this module
    (checking whether a dataset is current) never filter anything."""
    import scipy.signal

    return scipy.signal

__all__ = [
    "DEVICES",
    "Cycle",
    "Patient",
    "breathing_cycles",
    "flow_envelope",
    "vesicular_sound",
    "crackle",
    "crackle_onsets",
    "crackle_params",
    "wheeze",
    "heart_sounds",
    "friction_noise",
    "ambient_noise",
    "device_response",
    "synthesize_recording",
]


@dataclass(frozen=True)
class Device:
    name: str
    sample_rates: tuple[int, ...]  # possible rates (Meditron files come at 4 kHz or 10 kHz)
    highpass: float
    lowpass: float
    order: int  # steepness of the band edges
    ambient_db: float  # room-noise pickup relative to the breath sound (AKG picks up the most)


DEVICES: dict[str, Device] = {
    "AKGC417L": Device("AKGC417L", (44100,), 30.0, 6000.0, 2, -20.0),
    "LittC2SE": Device("LittC2SE", (44100,), 100.0, 1000.0, 4, -30.0),
    "Litt3200": Device("Litt3200", (4000,), 20.0, 1800.0, 4, -36.0),
    "Meditron": Device("Meditron", (4000, 10000), 20.0, 1800.0, 3, -32.0),
}


@dataclass(frozen=True)
class Cycle:
    start: float  # inspiration onset (ICBHI annotates cycles from one inspiration onset to the next)
    insp_end: float
    end: float


@dataclass(frozen=True)
class Patient:
    """Everything that makes one simulated patient sound like themselves across recordings."""

    pid: int
    diagnosis: str
    breath_rate: float  # breaths per minute
    ie_ratio: float  # expiration / inspiration duration
    depth: float  # relative tidal volume (scales loudness)
    corner_hz: float  # vesicular spectral corner
    heart_rate: float
    p_crackle: float  # probability that a cycle has crackles
    p_wheeze: float
    fine_fraction: float  # share of fine (vs coarse) crackles
    crackles_per_cycle: float  # Poisson mean (>= 1 crackle when present)
    crackle_snr_db: float  # mean crackle peak level vs local breath-sound RMS
    wheeze_hz: float  # centre of the patient's wheeze pitch
    p_rhonchus: float  # share of continuous sounds that are low-pitched rhonchi
    wheeze_snr_db: float
    friction_rate: float  # stethoscope friction/handling bursts per second (unlabelled)
    extra: dict = field(default_factory=dict)


# -- breathing --------------------------------------------------------------------------------


def breathing_cycles(rng: np.random.Generator, duration: float, rate: float, ie_ratio: float,
                     jitter: float = 0.12, start: float = 0.0) -> list[Cycle]:
    """Consecutive cycles covering [start, duration): period 60/rate with relative jitter."""
    cycles, t = [], start
    while t < duration:
        period = max(1.2, 60.0 / rate * (1.0 + jitter * rng.standard_normal()))
        ti = period / (1.0 + ie_ratio * float(np.exp(0.1 * rng.standard_normal())))
        cycles.append(Cycle(t, t + ti, t + period))
        t += period
    return cycles


def flow_envelope(n: int, sr: int, cycles: list[Cycle], exp_scale: float = 0.45,
                  lead_in: float = 0.0) -> np.ndarray:
    """Breath-sound amplitude over time: half-sine airflow per phase, amplitude ~ flow^1.5.

    Expiration is scaled by `exp_scale` (vesicular expiratory sound is much fainter). Before the
    first cycle the signal is the tail of a previous expiration (`lead_in` seconds of it).
    """
    t = np.arange(n) / sr
    env = np.zeros(n, dtype=np.float64)
    phases = [(c.start, c.insp_end, 1.0) for c in cycles] + [(c.insp_end, c.end, exp_scale) for c in cycles]
    if cycles and lead_in > 0:
        phases.append((cycles[0].start - lead_in * 2, cycles[0].start, exp_scale))
    for a, b, scale in phases:
        i, j = max(0, int(a * sr)), min(n, int(b * sr))
        if j > i:
            env[i:j] = scale * np.clip(np.sin(np.pi * (t[i:j] - a) / (b - a)), 0.0, 1.0) ** 1.5
    return env.astype(np.float32)


def vesicular_sound(rng: np.random.Generator, n: int, sr: int, envelope: np.ndarray,
                    corner_hz: float, highpass_hz: float = 80.0) -> np.ndarray:
    """Normal breath sound: white noise, band-limited to highpass_hz..corner_hz with a falling slope
    (two cascaded low-passes: about -12 dB/octave above the corner, then steeper), times `envelope`."""
    w = rng.standard_normal(n)
    lp = _signal().butter(2, min(corner_hz, 0.45 * sr), "lowpass", fs=sr, output="sos")
    lp2 = _signal().butter(2, min(corner_hz * 2.5, 0.45 * sr), "lowpass", fs=sr, output="sos")
    hp = _signal().butter(2, highpass_hz, "highpass", fs=sr, output="sos")
    y = _signal().sosfilt(hp, _signal().sosfilt(lp2, _signal().sosfilt(lp, w)))
    y /= np.std(y) + 1e-12
    return (y * envelope).astype(np.float32)


# -- adventitious sounds ----------------------------------------------------------------------


def crackle(sr: int, freq_hz: float, duration_s: float, polarity: float = 1.0) -> np.ndarray:
    """One crackle: a sharp initial deflection then a damped oscillation with lengthening period.

    x(t) = polarity * sin(2 pi phi(t)) * exp(-3 t / D), with instantaneous frequency falling from
    1.15 `freq_hz` to 0.85 `freq_hz` over the duration D (the period lengthens, as in recorded
    crackles), so the initial deflection width is ~1/(2.3 freq_hz) (0.7 ms for fine, 1.3 ms for
    coarse crackles) and the amplitude has decayed to 5 % at D. Peak amplitude is normalised to 1.
    """
    n = max(4, int(round(duration_s * sr)))
    t = np.arange(n) / sr
    f = freq_hz * (1.15 - 0.3 * t / duration_s)
    phase = np.cumsum(f) / sr
    x = polarity * np.sin(2 * np.pi * phase) * np.exp(-3.0 * t / duration_s)
    return (x / (np.max(np.abs(x)) + 1e-12)).astype(np.float32)


def crackle_params(rng: np.random.Generator, fine: bool) -> tuple[float, float]:
    """(frequency, duration) of a fine (~650 Hz, ~5 ms) or coarse (~350 Hz, ~15 ms) crackle."""
    if fine:
        return float(np.clip(rng.normal(650, 70), 480, 850)), float(rng.uniform(0.0035, 0.0065))
    return float(np.clip(rng.normal(350, 45), 230, 470)), float(rng.uniform(0.011, 0.019))


def crackle_onsets(rng: np.random.Generator, cycle: Cycle, fine_fraction: float,
                   count: int) -> list[tuple[float, bool, bool]]:
    """`(time, fine, inspiratory)` of `count` crackles in one cycle.

    Two thirds fall in inspiration (Piirila & Sovijarvi 1995: about twice as many inspiratory as
    expiratory crackles); fine crackles sit in mid-to-late inspiration (40-100 % of it), coarse
    ones early in inspiration (0-50 %) or anywhere in the first 80 % of expiration.
    """
    out = []
    ti, te = cycle.insp_end - cycle.start, cycle.end - cycle.insp_end
    for _ in range(count):
        fine = bool(rng.random() < fine_fraction)
        inspiratory = bool(rng.random() < 2.0 / 3.0)
        if inspiratory:
            at = cycle.start + (rng.uniform(0.4, 1.0) if fine else rng.uniform(0.0, 0.5)) * ti
        else:
            at = cycle.insp_end + rng.uniform(0.0, 0.8) * te
        out.append((float(at), fine, inspiratory))
    return out


def wheeze(rng: np.random.Generator, sr: int, duration_s: float, f0: float,
           harmonic_decay: float = 0.35, n_harmonics: int = 3, glide: float = 0.1) -> np.ndarray:
    """A continuous adventitious sound: a gliding sinusoid at `f0` with harmonics, unit RMS.

    The pitch drifts linearly by +-`glide`/2 of f0 with a slight 4-8 Hz flutter; the amplitude has
    30 ms raised-cosine onset and offset. Harmonic k has amplitude harmonic_decay**(k-1); harmonics
    above 0.45 sr are dropped (a 4 kHz recording keeps fewer of them, as in real data).
    """
    n = max(8, int(round(duration_s * sr)))
    t = np.arange(n) / sr
    direction = 1.0 if rng.random() < 0.5 else -1.0
    flutter = 0.015 * np.sin(2 * np.pi * rng.uniform(4, 8) * t + rng.uniform(0, 2 * np.pi))
    f = f0 * (1.0 + direction * glide * (t / duration_s - 0.5) + flutter)
    phase = np.cumsum(f) / sr
    x = np.zeros(n)
    for k in range(1, n_harmonics + 1):
        if k * f0 * (1 + glide) >= 0.45 * sr:
            break
        x += harmonic_decay ** (k - 1) * np.sin(2 * np.pi * k * phase + rng.uniform(0, 2 * np.pi))
    ramp = min(n // 2, int(0.03 * sr))
    if ramp > 0:
        w = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        x[:ramp] *= w
        x[-ramp:] *= w[::-1]
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


# -- unlabelled sounds every recording has ----------------------------------------------------


def heart_sounds(rng: np.random.Generator, n: int, sr: int, heart_rate: float) -> np.ndarray:
    """S1 (~100 ms, 30-70 Hz) and S2 (~80 ms, 50-100 Hz, ~0.3 s later) per beat, peak ~1."""
    out = np.zeros(n, dtype=np.float64)
    beat = 60.0 / heart_rate
    t0 = rng.uniform(0, beat)
    f1, f2 = rng.uniform(30, 70), rng.uniform(50, 100)
    while t0 < n / sr:
        for offset, f, dur, amp in ((0.0, f1, 0.10, 1.0), (0.3 * np.sqrt(beat), f2, 0.08, 0.7)):
            i = int((t0 + offset) * sr)
            m = int(dur * sr)
            if i >= n:
                continue
            tt = np.arange(min(m, n - i)) / sr
            g = np.exp(-0.5 * ((tt - dur / 2) / (dur / 6)) ** 2)
            out[i : i + len(tt)] += amp * rng.uniform(0.8, 1.2) * g * np.sin(2 * np.pi * f * tt)
        t0 += beat * (1 + 0.03 * rng.standard_normal())
    return out.astype(np.float32)


def friction_noise(rng: np.random.Generator, n: int, sr: int, rate: float) -> np.ndarray:
    """Stethoscope friction and handling: bursts of low-passed noise (20-250 ms) and isolated clicks.

    Clicks (1-4 ms, broadband) are what makes crackle detection hard in real recordings: they
    look like crackles but are not annotated. Unit-scale, unlabelled.
    """
    out = np.zeros(n, dtype=np.float64)
    count = rng.poisson(rate * n / sr)
    lp = _signal().butter(2, min(1500.0, 0.45 * sr), "lowpass", fs=sr, output="sos")
    for _ in range(count):
        i = int(rng.integers(0, n))
        if rng.random() < 0.5:  # a click
            m = int(rng.uniform(0.001, 0.004) * sr) + 2
            burst = rng.standard_normal(m) * np.exp(-np.arange(m) / (m / 3))
            amp = rng.uniform(0.5, 2.0)
        else:  # a rub
            m = int(rng.uniform(0.02, 0.25) * sr) + 2
            burst = _signal().sosfilt(lp, rng.standard_normal(m)) * np.hanning(m)
            amp = rng.uniform(0.3, 1.0)
        seg = burst[: n - i]
        out[i : i + len(seg)] += amp * seg / (np.max(np.abs(seg)) + 1e-12)
    return out.astype(np.float32)


def ambient_noise(rng: np.random.Generator, n: int, sr: int, mains_hz: float = 50.0) -> np.ndarray:
    """Room noise: pink noise plus a little mains hum with harmonics; unit RMS."""
    w = rng.standard_normal(n)
    b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
    a = [1, -2.494956002, 2.017265875, -0.522189400]
    from scipy.signal import lfilter

    y = lfilter(b, a, w)
    y /= np.std(y) + 1e-12
    t = np.arange(n) / sr
    hum = sum((0.5**k) * np.sin(2 * np.pi * mains_hz * k * t + rng.uniform(0, 6.28)) for k in (1, 2, 3))
    y = y + rng.uniform(0.0, 0.3) * hum
    return (y / (np.std(y) + 1e-12)).astype(np.float32)


def device_response(x: np.ndarray, sr: int, device: Device, rng: np.random.Generator) -> np.ndarray:
    """Band-limit like the device: Butterworth high-pass and low-pass, plus a resonance for acoustic
    stethoscopes (the tube and bell resonate around 100-250 Hz), then a small self-noise floor."""
    hp = _signal().butter(device.order, device.highpass, "highpass", fs=sr, output="sos")
    lp = _signal().butter(device.order, min(device.lowpass, 0.45 * sr), "lowpass", fs=sr, output="sos")
    y = _signal().sosfilt(lp, _signal().sosfilt(hp, x))
    if device.name == "LittC2SE":
        bp = _signal().butter(1, [120.0, 260.0], "bandpass", fs=sr, output="sos")
        y = y + 0.8 * _signal().sosfilt(bp, y)
    floor = 10 ** (rng.uniform(-58, -48) / 20) * (np.std(y) + 1e-9)
    y = y + floor * rng.standard_normal(len(y))
    return y.astype(np.float32)


# -- one recording ----------------------------------------------------------------------------


def _moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average (cumulative sums: O(n) whatever the width)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    half = width // 2
    idx = np.arange(len(x))
    lo, hi = np.clip(idx - half, 0, len(x)), np.clip(idx + width - half, 0, len(x))
    return (c[hi] - c[lo]) / np.maximum(hi - lo, 1)


def _add(dst: np.ndarray, src: np.ndarray, at: int) -> None:
    if at >= len(dst) or at + len(src) <= 0:
        return
    a, b = max(0, at), min(len(dst), at + len(src))
    dst[a:b] += src[a - at : b - at]


def synthesize_recording(
    rng: np.random.Generator,
    patient: Patient,
    device: Device,
    sr: int,
    duration: float,
    location: str,
    cycles: list[Cycle],
) -> tuple[np.ndarray, list[tuple[float, float, int, int]]]:
    """One auscultation recording and its ICBHI annotations `(onset, offset, crackles, wheezes)`.

    `cycles` is passed in so that simultaneous multichannel recordings share their breathing.
    Labels are drawn per cycle from the patient's tendencies, independently of the device and
    location, so neither gives the label away. Level of each event is set relative to the local
    breath-sound RMS, with the patient's mean and a per-event spread: some events are faint, as
    in real recordings.
    """
    # Labels and event parameters come from their own stream, drawn before any signal, so that they
    # do not depend on the sample rate (signal draws scale with the number of samples).
    ev_seed, sig_seed = rng.integers(2**63, size=2)
    ev, rng = np.random.default_rng(int(ev_seed)), np.random.default_rng(int(sig_seed))
    n = int(round(duration * sr))
    tracheal = location == "Tc"
    env = flow_envelope(n, sr, cycles, exp_scale=0.9 if tracheal else 0.45, lead_in=cycles[0].start)
    corner = patient.corner_hz * (2.0 if tracheal else 1.0)
    breath = vesicular_sound(rng, n, sr, env, corner) * patient.depth
    breath_rms = float(np.sqrt(np.mean(breath**2))) + 1e-9
    local = np.sqrt(_moving_mean(breath.astype(np.float64) ** 2, int(0.05 * sr)))
    local = np.maximum(local, 0.25 * breath_rms)
    adventitious = np.zeros(n, dtype=np.float32)
    labels = []
    for c in cycles:
        has_c = ev.random() < patient.p_crackle
        has_w = ev.random() < patient.p_wheeze
        if has_c:
            count = 1 + ev.poisson(patient.crackles_per_cycle)
            for at, fine, _ in crackle_onsets(ev, c, patient.fine_fraction, count):
                f, d = crackle_params(ev, fine)
                snr = patient.crackle_snr_db + ev.normal(0, 4)
                i = int(at * sr)
                if i < n:
                    amp = local[i] * 10 ** (snr / 20)
                    _add(adventitious, amp * crackle(sr, f, d, 1.0 if ev.random() < 0.8 else -1.0), i)
        if has_w:
            expiratory = ev.random() < 0.7
            a, b = (c.insp_end, c.end) if expiratory else (c.start, c.insp_end)
            dur = float(np.clip(ev.uniform(0.15, 0.9) * (b - a), 0.09, b - a))
            at = a + ev.uniform(0, max(0.0, (b - a) - dur))
            if ev.random() < patient.p_rhonchus:
                f0, decay, nh = ev.uniform(90, 190), ev.uniform(0.5, 0.75), 6
            else:
                f0, decay, nh = patient.wheeze_hz * np.exp(ev.normal(0, 0.15)), ev.uniform(0.15, 0.45), 3
            i = int(at * sr)
            if i < n:
                snr = patient.wheeze_snr_db + ev.normal(0, 4)
                seg = local[i : i + int(dur * sr)]
                amp = float(np.mean(seg)) * 10 ** (snr / 20) if len(seg) else 0.0
                _add(adventitious, amp * wheeze(rng, sr, dur, float(f0), decay, nh), i)
        labels.append((c.start, c.end, int(has_c), int(has_w)))

    heart_gain = {"Al": 0.9, "Ar": 0.6, "Tc": 0.5, "Ll": 0.5, "Lr": 0.35, "Pl": 0.3, "Pr": 0.25}[location]
    heart = heart_sounds(rng, n, sr, patient.heart_rate) * breath_rms * heart_gain * rng.uniform(1.0, 4.0)
    friction = friction_noise(rng, n, sr, patient.friction_rate) * breath_rms * rng.uniform(0.5, 3.0)
    body = breath + adventitious + heart + friction
    ambient = ambient_noise(rng, n, sr) * breath_rms * 10 ** ((device.ambient_db + rng.normal(0, 6)) / 20)
    y = device_response(body + ambient, sr, device, rng)
    y = y / (np.max(np.abs(y)) + 1e-9) * 10 ** (rng.uniform(-12, -2) / 20)
    return y.astype(np.float32), labels
