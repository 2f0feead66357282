"""`icbhi` builder: simulated auscultation recordings in the ICBHI 2017 Respiratory Sound Database layout.

Output (the real database's layout, so `tasks.datasets.icbhi` reads both):

    icbhi/ICBHI_final_database/<PPP>_<RRR>_<Loc>_<Mode>_<Device>.wav   mono PCM 16 at the device's rate
    icbhi/ICBHI_final_database/<PPP>_<RRR>_<Loc>_<Mode>_<Device>.txt   onset<TAB>offset<TAB>crackles<TAB>wheezes
    icbhi/ICBHI_challenge_train_test.txt      <recording><TAB>train|test, patient-wise ~60/40
    icbhi/ICBHI_Challenge_diagnosis.txt       <patient><TAB><diagnosis>

The audio comes from `respiratory_generator` (see its docstring for the literature). What makes the
set ICBHI-like rather than a toy: patients with their own breathing rate, depth, spectral corner,
heart rate and disease tendencies (diagnoses and their crackle/wheeze rates follow the real set's
mix: mostly COPD, then healthy/URTI, pneumonia, bronchiectasis, asthma, bronchiolitis, LRTI);
sessions recorded with one of four devices at their real sample rates (AKGC417L and LittC2SE at
44.1 kHz, Litt3200 at 4 kHz, Meditron at 4 or 10 kHz) in sequential (`sc`) or simultaneous
multichannel (`mc`, AKG only, shared breathing) mode at the seven real chest locations; unlabelled
heart sounds, friction clicks and room noise; events at a wide range of levels, some faint. Device
and location are drawn independently of the diagnosis, so they cannot give labels away. Like the
real files, annotation starts at the first full inspiration, and a few recordings annotate a last
cycle that runs past the end of the audio (loaders must clip it).

Difficulty: the levels in `DIAGNOSES`/`_patient` were tuned so that a log-mel mean+std linear probe
(`python -m tasks.data.icbhi_probe`) stays far from solving the task, as on the real data.
"""

from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from . import augment
from . import respiratory_generator as gen
from .build import BuildContext, DatasetBuilder, register_builder

__all__ = ["DIAGNOSES", "LOCATIONS", "PROFILE", "build_icbhi", "format_time"]

LOCATIONS = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
# diagnosis: (share of patients, p_crackle range, p_wheeze range, fine-crackle share, rhonchus share)
DIAGNOSES: dict[str, tuple[float, tuple[float, float], tuple[float, float], float, float]] = {
    "Healthy": (0.20, (0.0, 0.08), (0.0, 0.06), 0.5, 0.1),
    "URTI": (0.10, (0.03, 0.18), (0.0, 0.10), 0.5, 0.1),
    "COPD": (0.30, (0.25, 0.70), (0.10, 0.50), 0.25, 0.4),
    "Pneumonia": (0.09, (0.40, 0.80), (0.0, 0.20), 0.7, 0.2),
    "Bronchiectasis": (0.08, (0.40, 0.80), (0.05, 0.25), 0.2, 0.3),
    "Asthma": (0.08, (0.0, 0.12), (0.35, 0.80), 0.5, 0.1),
    "Bronchiolitis": (0.07, (0.20, 0.60), (0.20, 0.60), 0.8, 0.1),
    "LRTI": (0.08, (0.15, 0.50), (0.05, 0.30), 0.5, 0.2),
}
DEVICE_SHARE = {"AKGC417L": 0.3, "LittC2SE": 0.2, "Litt3200": 0.3, "Meditron": 0.2}
PROFILE = {
    "tiny": {"patients": 10, "sessions": (1, 2), "duration": (10.0, 12.0)},
    "mini": {"patients": 64, "sessions": (1, 3), "duration": (18.0, 24.0)},
}
FIRST_PATIENT = 101
TEST_SHARE = 0.4


def format_time(t: float) -> str:
    """Seconds as the real annotation files write them: up to 3 decimals, no trailing zeros."""
    s = f"{t:.3f}".rstrip("0").rstrip(".")
    return s or "0"


def _patient(rng: np.random.Generator, pid: int, diagnosis: str) -> gen.Patient:
    _, pc, pw, fine, rh = DIAGNOSES[diagnosis]
    obstructive = diagnosis in ("COPD", "Asthma", "Bronchiolitis")
    return gen.Patient(
        pid=pid,
        diagnosis=diagnosis,
        breath_rate=float(rng.uniform(12, 26)),
        ie_ratio=float(rng.uniform(1.8, 3.2) if obstructive else rng.uniform(1.2, 2.2)),
        depth=float(np.exp(rng.normal(0, 0.4))),
        corner_hz=float(rng.uniform(200, 600)),
        heart_rate=float(rng.uniform(58, 110)),
        p_crackle=float(rng.uniform(*pc)),
        p_wheeze=float(rng.uniform(*pw)),
        fine_fraction=float(np.clip(fine + rng.normal(0, 0.15), 0, 1)),
        crackles_per_cycle=float(rng.uniform(0.3, 4.0)),
        crackle_snr_db=float(rng.uniform(6.0, 20.0)),
        wheeze_hz=float(np.exp(rng.uniform(np.log(150), np.log(900)))),
        p_rhonchus=rh,
        wheeze_snr_db=float(rng.uniform(-3.0, 10.0)),
        friction_rate=float(rng.uniform(0.1, 1.2)),
    )


@dataclass(frozen=True)
class RecordingJob:
    name: str
    out_dir: Path
    patient: gen.Patient
    device: str
    sample_rate: int
    duration: float
    location: str
    cycles: tuple[gen.Cycle, ...]
    seed: int
    overrun: bool  # annotate a last cycle that runs past the end of the audio (a real-set quirk)


def render(job: RecordingJob) -> tuple[str, list[tuple[float, float, int, int]]]:
    rng = np.random.default_rng(job.seed)
    device = gen.DEVICES[job.device]
    audio, labels = gen.synthesize_recording(
        rng, job.patient, device, job.sample_rate, job.duration, job.location, list(job.cycles)
    )
    kept = [c for c in labels if c[1] <= job.duration]
    if job.overrun:
        extra = [c for c in labels if c[1] > job.duration and c[0] < job.duration - 0.5]
        kept += extra[:1]
    buf = io.BytesIO()
    sf.write(buf, augment.to_pcm16(augment.peak_limit(audio)), job.sample_rate, format="WAV", subtype="PCM_16")
    (job.out_dir / f"{job.name}.wav").write_bytes(buf.getvalue())
    lines = [f"{format_time(a)}\t{format_time(b)}\t{c}\t{w}\n" for a, b, c, w in kept]
    (job.out_dir / f"{job.name}.txt").write_text("".join(lines))
    return job.name, kept


def _plan(ctx: BuildContext) -> tuple[list[RecordingJob], dict[int, str], dict[int, str]]:
    """Patients, their split, sessions and recordings (cheap; done in the main process)."""
    prof = PROFILE[ctx.profile]
    rng = ctx.rng("patients")
    names = list(DIAGNOSES)
    shares = np.array([DIAGNOSES[d][0] for d in names])
    n = prof["patients"]
    # deterministic quota per diagnosis (largest remainder), then shuffled patient numbers
    quota = np.floor(shares / shares.sum() * n).astype(int)
    for i in np.argsort(-(shares / shares.sum() * n - quota))[: n - quota.sum()]:
        quota[i] += 1
    diagnoses = [d for d, q in zip(names, quota) for _ in range(q)]
    rng.shuffle(diagnoses)
    patients = {FIRST_PATIENT + i: _patient(ctx.rng("patient", i), FIRST_PATIENT + i, d) for i, d in enumerate(diagnoses)}

    # patient-wise split, stratified by diagnosis: ~60 % of each diagnosis' patients train
    split: dict[int, str] = {}
    srng = ctx.rng("split")
    for d in names:
        pids = [p for p, pat in patients.items() if pat.diagnosis == d]
        srng.shuffle(pids)
        n_test = int(round(TEST_SHARE * len(pids)))
        if len(pids) >= 2:
            n_test = min(max(n_test, 1), len(pids) - 1)
        for k, p in enumerate(pids):
            split[p] = "test" if k < n_test else "train"

    out_dir = ctx.out / "ICBHI_final_database"
    jobs: list[RecordingJob] = []
    devices, dshare = list(DEVICE_SHARE), np.array(list(DEVICE_SHARE.values()))
    for pid, pat in patients.items():
        prng = ctx.rng("sessions", pid)
        for session in range(1, int(prng.integers(prof["sessions"][0], prof["sessions"][1] + 1)) + 1):
            device = str(prng.choice(devices, p=dshare / dshare.sum()))
            sr = int(prng.choice(gen.DEVICES[device].sample_rates, p=[0.8, 0.2] if device == "Meditron" else None))
            mode = "mc" if device == "AKGC417L" and prng.random() < 0.8 else "sc"
            n_loc = int(prng.integers(2, 4)) if mode == "mc" else int(prng.integers(1, 3))
            locations = list(prng.choice(LOCATIONS, size=n_loc, replace=False))
            letter = "b" if prng.random() < 0.8 else "p"
            duration = float(np.round(prng.uniform(*prof["duration"]), 2))
            shared = None
            for k, loc in enumerate(locations):
                if mode == "sc" or shared is None:  # mc channels share one breathing pattern
                    first = float(prng.uniform(0.05, 1.5))
                    shared = tuple(gen.breathing_cycles(prng, duration + 6.0, pat.breath_rate, pat.ie_ratio, start=first))
                rec = f"{pid}_{session}{letter}{k + 1 if mode == 'sc' else 1}_{loc}_{mode}_{device}"
                jobs.append(
                    RecordingJob(
                        rec, out_dir, pat, device, sr, duration, str(loc), shared,
                        int(ctx.rng("recording", rec).integers(2**63)), bool(prng.random() < 0.08),
                    )
                )  # fmt: skip
    diagnosis = {pid: pat.diagnosis for pid, pat in patients.items()}
    return jobs, split, diagnosis


def build_icbhi(ctx: BuildContext) -> None:
    jobs, split, diagnosis = _plan(ctx)
    (ctx.out / "ICBHI_final_database").mkdir(parents=True)
    desc = f"icbhi ({ctx.profile})"
    if ctx.workers <= 1:
        results = [render(j) for j in tqdm(jobs, desc=desc, unit="rec", leave=False)]
    else:
        with ProcessPoolExecutor(max_workers=ctx.workers) as ex:
            results = list(tqdm(ex.map(render, jobs, chunksize=2), total=len(jobs), desc=desc, unit="rec", leave=False))

    lines = [f"{j.name}\t{split[j.patient.pid]}\n" for j in sorted(jobs, key=lambda j: j.name)]
    (ctx.out / "ICBHI_challenge_train_test.txt").write_text("".join(lines))
    (ctx.out / "ICBHI_Challenge_diagnosis.txt").write_text("".join(f"{p}\t{d}\n" for p, d in sorted(diagnosis.items())))

    classes = {"normal": 0, "crackle": 0, "wheeze": 0, "both": 0}
    by_split = {"train": dict(classes), "test": dict(classes)}
    for job, (_, cycles) in zip(jobs, results):
        for _, _, c, w in cycles:
            label = ("both" if w else "crackle") if c else ("wheeze" if w else "normal")
            classes[label] += 1
            by_split[split[job.patient.pid]][label] += 1
    ctx.summary.update(
        {
            "patients": len(diagnosis),
            "patients_test": sum(s == "test" for s in split.values()),
            "recordings": len(jobs),
            "cycles": sum(classes.values()),
            "classes": classes,
            "cycles_by_split": by_split,
            "hours": round(sum(j.duration for j in jobs) / 3600, 3),
            "devices": {d: sum(j.device == d for j in jobs) for d in gen.DEVICES},
            "sample_rates": sorted({j.sample_rate for j in jobs}),
            "diagnoses": {d: sum(v == d for v in diagnosis.values()) for d in DIAGNOSES},
            "generator": "tasks.data.respiratory_generator (Kompis & Russi 1997-style parametric simulator)",
        }
    )


register_builder(
    DatasetBuilder(
        name="icbhi",
        version="2",
        build=build_icbhi,
        description="ICBHI 2017 layout: literature-grounded simulated lung sounds, 4 devices, patient-wise split",
    )
)
