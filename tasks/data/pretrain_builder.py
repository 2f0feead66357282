"""`pretrain` builder: self-contained pretraining corpora drawn only from training material.

Output, one folder per corpus, each with an `index.csv` and the audio it lists:

    pretrain/general/index.csv       unlabeled audio for M2D pretraining
    pretrain/respiratory/index.csv   ICBHI *training-split* cycles with their labels (M2D-X supervised task)
    pretrain/noise/index.csv         background noise for M2D-X noise mixing

Index format (read by the pretraining code with its own few-line reader, without importing `tasks`):
a UTF-8 CSV with header `path,start,stop,label,source`. `path` is relative to the index file's
folder; `start`/`stop` are seconds (both empty = the whole file); `label` is empty for unlabeled
audio, else one of normal/crackle/wheeze/both; `source` is a provenance id
(`librispeech:train-clean-100/<utt>`, `debian:<package>:<file>`, `icbhi:<patient>/<recording>#<cycle>`,
`generated:<what>/<n>`). Audio is 16 kHz mono PCM-16 WAV, except LibriSpeech FLAC copied byte for byte.

What "training material only" means here, and why:
- Speech: LibriSpeech `train-clean-100` only; dev/test voices never appear.
- Environmental sounds: ESC-50 is scored by 5-fold cross-validation, so every ESC-50 clip is test
  data for one fold; "training folds" do not exist globally. The honest choice is to use none of
  the ESC-50 material: the general corpus takes the packages' *other* recordings, excluding every
  file edited from an original any ESC-50 source uses (same freesound original, same OpenSFX
  source file, same numbered family of game sounds) and the ESC-50 background beds.
- Noise: the music-on-hold tracks and ambience beds in `sound_sources.PRETRAIN_NOISE`, disjoint from
  the beds mixed into ESC-50 clips, plus simulated auscultation background (heart sounds,
  stethoscope friction, room noise through a random device response) with no breath sound.
- Respiratory: only recordings that `ICBHI_challenge_train_test.txt` puts in `train`.
`tests/test_data_sounds.py` checks all of this by provenance and by content hash.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from . import augment
from . import respiratory_generator as gen
from . import rcc
from .build import BuildContext, DatasetBuilder, register_builder
from .sound_sources import (
    ESC_BACKGROUNDS,
    ESC_SOURCES,
    GCOMPRIS,
    MINETEST,
    MOH,
    OPENTTD,
    PRETRAIN_NOISE,
    SONICPI,
    TUXPAINT,
    Sound,
    SoundLibrary,
    decode,
    esc_originals,
    read_cat,
)

__all__ = ["INDEX_COLUMNS", "SAMPLE_RATE", "build_pretrain", "debian_candidates", "write_index"]

INDEX_COLUMNS = ("path", "start", "stop", "label", "source")
SAMPLE_RATE = 16000
NOISE_CLIP_SECONDS = 10.0
PROFILE = {
    "tiny": {"debian_files": 30, "bed_seconds": 30.0, "generated_noise": 4, "max_file_seconds": 30.0},
    "mini": {"debian_files": None, "bed_seconds": None, "generated_noise": 40, "max_file_seconds": 60.0},
}
_AUDIO = (".wav", ".ogg", ".flac")
_FILE_RE = re.compile(r'"([^"]+\.(?:wav|mp3|aif|aiff|flac|ogg))"', re.IGNORECASE)


def _family(member: str) -> str:
    """`.../default_grass_footstep.2.ogg` -> `.../default_grass_footstep`: numbered cuts of one sound."""
    return re.sub(r"(\.\d+)?\.[A-Za-z0-9]+$", "", member)


def debian_candidates(lib: SoundLibrary) -> list[Sound]:
    """Recordings in the packages that no ESC-50 clip or background uses, directly or via their original."""
    used = {s for srcs in ESC_SOURCES.values() for src in srcs for s in src.sounds} | set(ESC_BACKGROUNDS)
    used_members = {s.member for s in used}
    used_families = {_family(s.member) for s in used}
    originals = esc_originals()
    out: list[Sound] = []

    # OpenSFX: exclude entries that share any original file name with an ESC-50 entry
    cat = lib.root(OPENTTD) / "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
    entries = read_cat(cat)
    used_idx = {int(s.member.rsplit("#", 1)[1]) for s in used if s.package == OPENTTD}
    used_files = {f for i in used_idx for f in _FILE_RE.findall(entries[i][0])}
    for i, (name, _) in enumerate(entries):
        if i in used_idx or used_files & set(_FILE_RE.findall(name)):
            continue
        member = f"usr/share/games/openttd/baseset/opensfx/opensfx.cat#{i}"
        out.append(Sound(OPENTTD, member, f"opensfx:{i}"))

    # gcompris: every sound member of every bundle
    for bundle in sorted((lib.root(GCOMPRIS) / "usr/share/gcompris-qt/rcc").glob("*.rcc")):
        for inner in rcc.member_names(bundle):
            if inner.lower().endswith(_AUDIO):
                member = f"usr/share/gcompris-qt/rcc/{bundle.name}!{inner}"
                out.append(Sound(GCOMPRIS, member, f"gcompris:{inner}"))

    def files(package: str, sub: str, pattern: str) -> list[Path]:
        root = lib.root(package)
        return sorted(p for p in (root / sub).rglob(pattern) if p.is_file())

    for p in files(MINETEST, "usr/share/games/minetest/games", "*.ogg"):
        rel = str(p.relative_to(lib.root(MINETEST)))
        out.append(Sound(MINETEST, rel, f"minetest:{_family(rel)}", "CC-BY-SA-3.0/CC-BY-3.0/CC0-1.0 (see mod README)",
                         "minetest_game contributors (see mod README.txt)"))  # fmt: skip
    for p in files(SONICPI, "usr/share/sonic-pi/samples", "*.flac"):
        out.append(Sound(SONICPI, str(p.relative_to(lib.root(SONICPI))), f"sonic-pi:{p.name}"))
    for p in files(TUXPAINT, "usr/share/tuxpaint/stamps", "*.ogg"):
        rel = str(p.relative_to(lib.root(TUXPAINT)))
        if "/symbols/" in rel or "_desc" in p.name:  # spoken letters/numbers and descriptions: speech, skip
            continue
        out.append(Sound(TUXPAINT, rel, f"tuxpaint:{rel.split('stamps/', 1)[1]}"))

    noise_members = {s.member for s in PRETRAIN_NOISE}
    return [
        s
        for s in out
        if s.member not in used_members
        and _family(s.member) not in used_families
        and s.original not in originals
        and s.member not in noise_members
    ]


def write_index(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in INDEX_COLUMNS})


def _wav_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, augment.to_pcm16(augment.peak_limit(x)), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _convert(job: tuple[Path, Path, float | None]) -> float:
    """Decode `src`, resample to 16 kHz mono, keep at most `max_s` seconds, write `dst`; returns seconds."""
    src, dst, max_s = job
    x = decode(src, SAMPLE_RATE)
    if max_s is not None:
        x = x[: int(max_s * SAMPLE_RATE)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(_wav_bytes(x))
    return len(x) / SAMPLE_RATE


def _map(fn, jobs: list, workers: int, desc: str) -> list:
    if workers <= 1:
        return [fn(j) for j in tqdm(jobs, desc=desc, leave=False)]
    with ProcessPoolExecutor(max_workers=workers) as ex:
        return list(tqdm(ex.map(fn, jobs, chunksize=8), total=len(jobs), desc=desc, leave=False))


def _safe(member: str) -> str:
    return re.sub(r"[^A-Za-z0-9._/-]+", "_", member.replace("!", "/").replace("#", "_")).strip("/")


def _auscultation_noise(seed: int) -> bytes:
    """Ten seconds of what a stethoscope hears besides breathing: heart, friction, room, device."""
    rng = np.random.default_rng(seed)
    device = gen.DEVICES[str(rng.choice(list(gen.DEVICES)))]
    sr = SAMPLE_RATE
    n = int(NOISE_CLIP_SECONDS * sr)
    x = gen.heart_sounds(rng, n, sr, float(rng.uniform(55, 115))) * rng.uniform(0.5, 2.0)
    x = x + gen.friction_noise(rng, n, sr, float(rng.uniform(0.1, 1.5))) * rng.uniform(0.2, 1.0)
    x = x + gen.ambient_noise(rng, n, sr) * 10 ** (rng.uniform(-30, -10) / 20)
    y = gen.device_response(x, sr, device, rng)
    return _wav_bytes(y / (np.max(np.abs(y)) + 1e-9) * 10 ** (rng.uniform(-12, -3) / 20))


def build_pretrain(ctx: BuildContext) -> None:
    prof = PROFILE[ctx.profile]
    lib = SoundLibrary(ctx.sources)
    summary: dict = {}

    # -- general ---------------------------------------------------------------------------
    gdir = ctx.out / "general"
    rows: list[dict] = []
    libri = ctx.dataset("librispeech") / "LibriSpeech" / "train-clean-100"
    if not libri.is_dir():
        raise FileNotFoundError(f"{libri}: the librispeech dataset has no train-clean-100 split")
    speech_s = 0.0
    for flac in sorted(libri.rglob("*.flac")):
        rel = flac.relative_to(libri)
        dst = gdir / "audio" / "librispeech" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(flac, dst)
        speech_s += sf.info(str(dst)).duration
        rows.append({"path": f"audio/librispeech/{rel.as_posix()}", "source": f"librispeech:train-clean-100/{flac.stem}"})

    candidates = debian_candidates(lib)
    if prof["debian_files"] is not None:
        pick = ctx.rng("debian-subset").choice(len(candidates), size=min(prof["debian_files"], len(candidates)), replace=False)
        candidates = [candidates[i] for i in sorted(pick)]
    beds = list(PRETRAIN_NOISE)
    jobs, meta = [], []
    for s in candidates + beds:
        src = lib.path(s)
        if sf.info(str(src)).duration < 0.3:  # OpenSFX's empty placeholders, clicks
            continue
        rel = f"audio/debian/{s.package}/{_safe(s.member)}.wav"
        max_s = prof["bed_seconds"] if s in beds else prof["max_file_seconds"]
        jobs.append((src, gdir / rel, max_s))
        meta.append((rel, f"debian:{s.package}:{s.member}"))
    seconds = _map(_convert, jobs, ctx.workers, f"pretrain general ({ctx.profile})")
    for (rel, source), _ in zip(meta, seconds):
        rows.append({"path": rel, "source": source})
    write_index(gdir / "index.csv", rows)
    summary["general"] = {
        "files": len(rows),
        "hours": round((speech_s + sum(seconds)) / 3600, 3),
        "speech_hours": round(speech_s / 3600, 3),
        "debian_files": len(jobs),
        "debian_packages": sorted({s.package for s in candidates + beds}),
    }

    # -- noise -----------------------------------------------------------------------------
    ndir = ctx.out / "noise"
    nrows: list[dict] = []
    jobs = []
    for s in beds:
        rel = f"audio/{s.package}/{Path(s.member).stem}.wav"
        jobs.append((lib.path(s), ndir / rel, prof["bed_seconds"]))
    seconds = _map(_convert, jobs, ctx.workers, "pretrain noise")
    for s, (_, dst, _), dur in zip(beds, jobs, seconds):
        rel = dst.relative_to(ndir).as_posix()
        for k in range(max(1, int(dur // NOISE_CLIP_SECONDS))):
            a = k * NOISE_CLIP_SECONDS
            nrows.append({"path": rel, "start": f"{a:.1f}", "stop": f"{min(dur, a + NOISE_CLIP_SECONDS):.1f}",
                          "source": f"debian:{s.package}:{s.member}"})  # fmt: skip
    for i in range(prof["generated_noise"]):
        rel = f"audio/generated/auscultation_{i:03d}.wav"
        (ndir / rel).parent.mkdir(parents=True, exist_ok=True)
        (ndir / rel).write_bytes(_auscultation_noise(int(ctx.rng("auscultation-noise", i).integers(2**63))))
        nrows.append({"path": rel, "source": f"generated:auscultation-noise/{i}"})
    write_index(ndir / "index.csv", nrows)
    summary["noise"] = {"clips": len(nrows), "hours": round((sum(seconds) + prof["generated_noise"] * NOISE_CLIP_SECONDS) / 3600, 3)}

    # -- respiratory -----------------------------------------------------------------------
    from ..datasets.icbhi import load_icbhi

    rdir = ctx.out / "respiratory"
    cycles = load_icbhi(ctx.dataset("icbhi"), split="train")
    recordings = sorted({e.path for e in cycles})
    jobs = [(p, rdir / "audio" / f"{p.stem}.wav", None) for p in recordings]
    _map(_convert, jobs, ctx.workers, "pretrain respiratory")
    rrows = [
        {
            "path": f"audio/{e.path.stem}.wav",
            "start": f"{e.start:.3f}",
            "stop": f"{e.stop:.3f}",
            "label": e.label,
            "source": f"icbhi:{e.meta['patient']}/{e.meta['recording']}#{e.meta['cycle']}",
        }
        for e in cycles
    ]
    write_index(rdir / "index.csv", rrows)
    summary["respiratory"] = {
        "cycles": len(rrows),
        "recordings": len(recordings),
        "patients": len({e.meta["patient"] for e in cycles}),
        "labels": {c: sum(r["label"] == c for r in rrows) for c in ("normal", "crackle", "wheeze", "both")},
    }
    (ctx.out / "README.md").write_text(__doc__.split("\n", 1)[1])
    ctx.summary.update(summary)


register_builder(
    DatasetBuilder(
        name="pretrain",
        version="1",
        build=build_pretrain,
        description="pretraining corpora (general, respiratory, noise) from training material only",
        requires=("librispeech", "esc50", "icbhi"),
    )
)
