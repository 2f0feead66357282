"""`esc50` builder: real recordings from Debian packages written in the ESC-50 release layout.

Output (exactly the real corpus' layout, so `tasks.datasets.esc50` reads both):

    esc50/ESC-50-master/audio/{fold}-{src_file}-{take}-{target}.wav   5 s, 44.1 kHz, mono, PCM 16
    esc50/ESC-50-master/meta/esc50.csv    filename,fold,target,category,esc10,src_file,take
    esc50/ESC-50-master/README.md         where every source came from, licences, how clips were made

How clips are made. ESC-50 (Piczak 2015) cut up to 40 five-second clips per class from freesound
recordings, padded shorter ones with digital silence, and kept every clip of one source recording in
one fold so that 5-fold cross-validation never tests on a recording it trained on. Here each class
has 3-7 original recordings (`sound_sources.ESC_SOURCES`; files edited from one original count as
one source). Take A of a source is the plain recording (short events such as barks or footsteps
repeated at random intervals, long ones cropped); further takes add the augmentations real
collections show: level changes, a room from a pyroomacoustics ShoeBox bank, and background noise
(coloured noise or a real ambience bed) at 8-30 dB SNR; every take has a faint room-tone floor.
The recorded span is zero-padded to 5 s.
Folds are assigned per source, greedily balancing clip counts across the five folds.
"""

from __future__ import annotations

import csv
import functools
import io
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from upstreams.fileio import sha256_bytes

from . import augment
from .build import BuildContext, DatasetBuilder, register_builder
from .sound_sources import (
    ESC10,
    ESC50_TARGETS,
    ESC_BACKGROUNDS,
    ESC_SOURCES,
    EVENT_REPEATS,
    SoundLibrary,
    decode,
)

__all__ = ["SAMPLE_RATE", "CLIP_SECONDS", "CLIPS_PER_CLASS", "ESC50_COLUMNS", "build_esc50", "src_file_id"]

SAMPLE_RATE = 44100
CLIP_SECONDS = 5.0
CLIPS_PER_CLASS = {"tiny": 5, "mini": 32}
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
TEXTURE_MIN_SECONDS = 4.0  # a member at least this long is cropped rather than repeated


def src_file_id(key: str) -> int:
    """A stable six-digit id in the range of real ESC-50 `src_file` values (freesound ids)."""
    return 100000 + int(sha256_bytes(key.encode())[:12], 16) % 900000


def _take_name(i: int) -> str:
    if i >= 26:
        raise ValueError("more than 26 takes from one source: ESC-50 takes are single letters A-Z")
    return chr(ord("A") + i)


@dataclass(frozen=True)
class ClipJob:
    out: Path
    category: str
    members: tuple[Path, ...]
    seed: int
    take: int  # 0 = the plain recording


# -- per-process state (set once per worker; the same objects in the main process when workers == 1)
_BANK: augment.RoomBank | None = None
_BACKGROUNDS: tuple[Path, ...] = ()


def _init_worker(bank: augment.RoomBank, backgrounds: tuple[Path, ...]) -> None:
    global _BANK, _BACKGROUNDS
    _BANK, _BACKGROUNDS = bank, backgrounds


@functools.lru_cache(maxsize=64)
def _audio(path: Path) -> np.ndarray:
    x = decode(path, SAMPLE_RATE)
    x = x - float(np.mean(x))  # some game sounds carry a DC offset
    peak = float(np.max(np.abs(x))) or 1.0
    return (x / peak).astype(np.float32)


def _fade(x: np.ndarray, ms: float = 5.0) -> np.ndarray:
    n = min(len(x) // 2, int(SAMPLE_RATE * ms / 1000))
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x = x.copy()
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def compose(rng: np.random.Generator, category: str, members: list[np.ndarray]) -> np.ndarray:
    """The recorded span of one clip (<= 5 s) from the source's member files, before augmentation."""
    length = int(CLIP_SECONDS * SAMPLE_RATE)
    lens = np.array([len(m) for m in members], dtype=float)
    if lens.max() >= TEXTURE_MIN_SECONDS * SAMPLE_RATE:
        # a long recording: crop a window from a member chosen in proportion to its length
        m = members[int(rng.choice(len(members), p=lens / lens.sum()))]
        return _fade(augment.random_crop(rng, m, length))
    lo, hi = EVENT_REPEATS.get(category, (1, 3))
    count = int(rng.integers(lo, hi + 1))
    footsteps = category == "footsteps"
    out = np.zeros(length, dtype=np.float32)
    t = int(rng.uniform(0.0, 0.4) * SAMPLE_RATE)
    end = 0
    for _ in range(count):
        ev = members[int(rng.integers(len(members)))] * augment.db_to_gain(rng.uniform(-4.0, 0.0))
        if t >= length:
            break
        seg = ev[: length - t]
        out[t : t + len(seg)] += seg
        end = t + len(seg)
        gap = rng.uniform(0.25, 0.6) if footsteps else rng.uniform(0.15, 1.0)
        t = end + int(gap * SAMPLE_RATE) if not footsteps else t + int(gap * SAMPLE_RATE)
    tail = int(rng.uniform(0.2, 0.6) * SAMPLE_RATE)
    return out[: min(length, max(end + tail, int(0.5 * SAMPLE_RATE)))]


def augment_span(rng: np.random.Generator, x: np.ndarray, take: int) -> np.ndarray:
    """Room, background noise and level for takes after A; take A keeps the plain recording.

    Every take gets a faint room-tone floor (40-55 dB below the signal) over its recorded span:
    repeated events would otherwise be separated by digital silence, which no field recording
    has (the zero padding after the span stays digital silence, as in the real set).
    """
    x = augment.mix_at_snr(x, augment.coloured_noise(rng, len(x), "pink"), float(rng.uniform(40.0, 55.0)))
    if take > 0:
        if rng.random() < 0.6:
            rir = _BANK.rirs[int(rng.integers(len(_BANK.rirs)))]
            x = augment.apply_room(x, rir, wet=float(rng.uniform(0.2, 0.6)))
        if rng.random() < 0.6:
            if _BACKGROUNDS and rng.random() < 0.5:
                noise = augment.random_crop(rng, _audio(_BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]), len(x))
            else:
                noise = augment.coloured_noise(rng, len(x), str(rng.choice(["white", "pink", "brown"])))
            x = augment.mix_at_snr(x, noise, float(rng.uniform(8.0, 30.0)))
    peak_db = -1.0 if take == 0 else float(rng.uniform(-14.0, -1.0))
    peak = float(np.max(np.abs(x))) or 1.0
    return (x * (augment.db_to_gain(peak_db) / peak)).astype(np.float32)


def render(job: ClipJob) -> str:
    """Write one clip; returns its filename. Pure function of the job (deterministic)."""
    rng = np.random.default_rng(job.seed)
    span = compose(rng, job.category, [_audio(p) for p in job.members])
    span = augment_span(rng, span, job.take)
    clip = np.zeros(int(CLIP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    clip[: len(span)] = span  # zero-padded like the real set
    buf = io.BytesIO()
    sf.write(buf, augment.to_pcm16(augment.peak_limit(clip)), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    job.out.write_bytes(buf.getvalue())
    return job.out.name


def _assign_folds(rng: np.random.Generator, clips_per_source: dict[str, int]) -> dict[str, int]:
    """Greedy: each source goes to the fold with the fewest clips (ties broken at random)."""
    load = np.zeros(5)
    folds = {}
    for category, sources in ESC_SOURCES.items():
        used: set[int] = set()
        for src in sorted(sources, key=lambda s: -clips_per_source[s.key]):
            # prefer folds this class is not in yet, so that each class is spread over folds
            cand = [f for f in range(5) if f not in used] or list(range(5))
            best = min(load[f] for f in cand)
            ties = [f for f in cand if load[f] == best]
            f = ties[int(rng.integers(len(ties)))]
            folds[src.key] = f + 1
            load[f] += clips_per_source[src.key]
            used.add(f)
    return folds


def build_esc50(ctx: BuildContext) -> None:
    lib = SoundLibrary(ctx.sources)
    per_class = CLIPS_PER_CLASS[ctx.profile]
    top = ctx.out / "ESC-50-master"
    (top / "audio").mkdir(parents=True)
    (top / "meta").mkdir()

    # clips per source: spread the class quota evenly, larger share to sources listed first
    clips_per_source: dict[str, int] = {}
    for sources in ESC_SOURCES.values():
        base, extra = divmod(per_class, len(sources))
        for i, src in enumerate(sources):
            clips_per_source[src.key] = base + (1 if i < extra else 0)
    folds = _assign_folds(ctx.rng("folds"), clips_per_source)

    ids = {src.key: src_file_id(src.key) for srcs in ESC_SOURCES.values() for src in srcs}
    if len(set(ids.values())) != len(ids):
        raise RuntimeError("src_file id collision in the ESC-50 catalogue; rename a source key")

    jobs: list[ClipJob] = []
    rows: list[dict] = []
    credits: list[tuple[str, str, str, str, str]] = []
    for category, sources in ESC_SOURCES.items():
        target = ESC50_TARGETS[category]
        for src in sources:
            paths = tuple(lib.path(s) for s in src.sounds)
            for s, p in zip(src.sounds, paths):
                credits.append((category, str(ids[src.key]), s.package, *lib.credits[p]))
            for take in range(clips_per_source[src.key]):
                name = f"{folds[src.key]}-{ids[src.key]}-{_take_name(take)}-{target}.wav"
                seed = int(ctx.rng("clip", src.key, take).integers(2**63))
                jobs.append(ClipJob(top / "audio" / name, category, paths, seed, take))
                rows.append(
                    {
                        "filename": name,
                        "fold": folds[src.key],
                        "target": target,
                        "category": category,
                        "esc10": str(category in ESC10),
                        "src_file": ids[src.key],
                        "take": _take_name(take),
                    }
                )

    bank = augment.make_room_bank(ctx.rng("rooms"), SAMPLE_RATE)
    backgrounds = tuple(lib.path(s) for s in ESC_BACKGROUNDS)
    _run(jobs, ctx.workers, bank, backgrounds, desc=f"esc50 ({ctx.profile})")

    rows.sort(key=lambda r: r["filename"])
    with open(top / "meta" / "esc50.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=ESC50_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    _write_readme(top / "README.md", ctx.profile, credits, bank)

    per_source_packages = {
        c: sorted({s.package for src in srcs for s in src.sounds}) for c, srcs in ESC_SOURCES.items()
    }
    ctx.summary.update(
        {
            "clips": len(rows),
            "classes": len(ESC_SOURCES),
            "hours": round(len(rows) * CLIP_SECONDS / 3600, 3),
            "sample_rate": SAMPLE_RATE,
            "sources": len(ids),
            "sources_per_class": {c: len(s) for c, s in ESC_SOURCES.items()},
            "packages_per_class": per_source_packages,
            "clips_per_fold": {f: sum(r["fold"] == f for r in rows) for f in range(1, 6)},
        }
    )


def _run(jobs: list[ClipJob], workers: int, bank, backgrounds, desc: str) -> None:
    if workers <= 1:
        _init_worker(bank, backgrounds)
        for job in tqdm(jobs, desc=desc, unit="clip", leave=False):
            render(job)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(bank, backgrounds)) as ex:
        for _ in tqdm(ex.map(render, jobs, chunksize=4), total=len(jobs), desc=desc, unit="clip", leave=False):
            pass


def _write_readme(path: Path, profile: str, credits, bank: augment.RoomBank) -> None:
    lines = [
        f"# ESC-50 layout, offline mini-benchmark ({profile} profile)",
        "",
        "Built by `bench data build --only esc50`. This is NOT the original ESC-50 (Piczak 2015): the layout,",
        "column names and category/target ids are the real ones, but the audio comes from real recordings",
        "shipped in Debian `main` packages (credits below), cut and augmented into 5 s clips.",
        "All clips cut from one source recording (`src_file`) are in one fold.",
        "",
        "Rooms used for reverberation (pyroomacoustics ShoeBox): " + "; ".join(bank.descriptions),
        "",
        "| category | src_file | package | licence | credit |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(set(credits)):
        lines.append("| " + " | ".join(x.replace("|", "/").replace("\n", " ") for x in row) + " |")
    path.write_text("\n".join(lines) + "\n")


register_builder(
    DatasetBuilder(
        name="esc50",
        version="2",
        build=build_esc50,
        description="ESC-50 layout: 15 classes of real recordings from Debian packages, 5 folds by source",
    )
)
