"""`speech_commands`: keyword spotting in the Speech Commands v0.02 layout, 35 words, TTS speakers.

Layout (read by `tasks.datasets.speech_commands`, s3prl, torchaudio's SPEECHCOMMANDS)::

    speech_commands/speech_commands_v0.02/
        <word>/<speaker hash>_nohash_<n>.wav    16 kHz, 16-bit, mono, 1 s (some shorter)
        validation_list.txt  testing_list.txt
        _background_noise_/*.wav + README.md    real recordings (+ white and pink noise, as in v0.02)
        README.md

Speakers are voice variants (`tts`); each has an 8-hex-digit "hash" like the real set. Splits
follow the real set's rule exactly: `validation_list.txt` / `testing_list.txt` list the clips for
which the dataset README's `which_set()` (sha1 of the speaker hash into percentage buckets, 10 %
validation, 10 % testing) says so. To keep whole recorded persons out of training, each variant's
hash is drawn (salted sha1 of its description) until `which_set` assigns it to its planned split:
validation = KED (festival ked_diphone), testing = RMS (flite rms), training = KAL, SLT, AWB, the
same person-level hold-out as the LibriSpeech-layout corpus.

Each speaker says every word once or twice (a repetition gets slightly different rate and pitch
settings, so it is a new rendition, not a copy). A word is placed at a random position in the 1-s clip; a
share of clips ends right after the word, shorter than 1 s, as many real clips do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from ..datasets.speech_commands import BACKGROUND, WORDS_V2, which_set
from .build import BuildContext, DatasetBuilder, register_builder
from .tts import (
    SAMPLE_RATE,
    VOICES,
    Speech,
    SynthJob,
    VoiceVariant,
    add_noise_floor,
    check_voices,
    render,
    resample,
    sample_variants,
    to_pcm16,
)

__all__ = ["NAME", "SPLIT_VOICES", "BACKGROUND_SOURCES"]

NAME = "speech_commands"
VERSION = "3"
TOP = "speech_commands_v0.02"
CLIP = SAMPLE_RATE  # samples in a full 1-s clip

SPLIT_VOICES: dict[str, tuple[str, ...]] = {
    "training": ("flite/kal16", "festival/kal_diphone", "flite/slt", "festival/cmu_us_slt_arctic_hts", "flite/awb"),
    "validation": ("festival/ked_diphone",),
    "testing": ("flite/rms",),
}


@dataclass(frozen=True)
class BackgroundSource:
    name: str  # file written to _background_noise_/
    package: str
    files: tuple[str, ...]  # concatenated in order (short takes of one recording session)
    licence: str
    credit: str
    max_seconds: float | None = None


_MT = "usr/share/games/minetest/games/minetest_game/mods"
BACKGROUND_SOURCES: tuple[BackgroundSource, ...] = (
    BackgroundSource(
        "running_water.wav",
        "minetest-data",
        tuple(f"{_MT}/env_sounds/sounds/env_sounds_water.{i}.ogg" for i in range(1, 5)),
        "CC0-1.0",
        "Yuval, freesound.org/people/Yuval/sounds/197023 (via Minetest Game)",
    ),
    BackgroundSource(
        "bubbling_lava.wav",
        "minetest-data",
        tuple(f"{_MT}/env_sounds/sounds/env_sounds_lava.{i}.ogg" for i in range(1, 3)),
        "CC0-1.0",
        "Halion, freesound.org/people/Halion/sounds/17785 (via Minetest Game)",
    ),
    BackgroundSource(
        "crackling_fire.wav",
        "minetest-data",
        (f"{_MT}/fire/sounds/fire_large.ogg",) + tuple(f"{_MT}/fire/sounds/fire_fire.{i}.ogg" for i in range(1, 4)),
        "CC-BY-3.0",
        "Dynamicell, freesound.org/people/Dynamicell/sounds/17548 (via Minetest Game)",
    ),
    BackgroundSource(
        "vinyl_hiss.wav",
        "sonic-pi-samples",
        ("usr/share/sonic-pi/samples/vinyl_hiss.flac",),
        "CC0-1.0",
        "veezay, freesound.org/people/veezay/sounds/130393 (via Sonic Pi)",
    ),
    BackgroundSource(
        "hold_music.wav",
        "asterisk-moh-opsound-wav",
        ("usr/share/asterisk/moh/macroform-cold_day.wav",),
        "CC-BY-SA-3.0",
        "Macroform, 'Cold Day' (opsound.org, Asterisk music on hold)",
        max_seconds=60.0,
    ),
)
_NOISE_SECONDS = 60.0  # the real set's white_noise.wav / pink_noise.wav are about a minute long


@dataclass(frozen=True)
class Plan:
    variants_per_voice: int
    max_repetitions: int  # each word said 1..max times by each speaker
    skip_probability: float  # a speaker leaves a word out (real speakers did not record every word)


PLANS = {
    "tiny": Plan(variants_per_voice=1, max_repetitions=1, skip_probability=0.0),
    "mini": Plan(variants_per_voice=12, max_repetitions=2, skip_probability=0.1),
}

_SHORT_CLIP_SHARE = 0.1


def speaker_hash(variant: VoiceVariant, split: str) -> str:
    """8 hex digits that `which_set` puts into `split` (salted until it does)."""
    for salt in range(10_000):
        h = hashlib.sha1(f"{variant.describe()}|{salt}".encode()).hexdigest()[:8]
        if which_set(f"{h}_nohash_0.wav") == split:
            return h
    raise RuntimeError(f"no speaker hash lands in '{split}'")  # pragma: no cover - probability ~0


def _trim(x: np.ndarray, floor_db: float = -35.0) -> np.ndarray:
    """The word without the engine's leading/trailing pauses (10-ms frames above peak + floor_db)."""
    hop = SAMPLE_RATE // 100
    n = len(x) // hop
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    active = np.nonzero(rms > rms.max() * 10 ** (floor_db / 20))[0]
    return x[active[0] * hop : (active[-1] + 1) * hop]


def _write_clip(job: SynthJob, speech: Speech) -> float:
    """Place the word in a 1-s clip (random onset, some clips cut short); 16-bit wav. Returns seconds."""
    path, gain_db, noise_db = job.payload
    rng = np.random.default_rng(job.seed)
    word = _trim(speech.samples)[:CLIP] * 10 ** (gain_db / 20)
    onset = int(rng.integers(0, CLIP - len(word) + 1))
    length = CLIP
    if rng.random() < _SHORT_CLIP_SHARE:
        length = min(CLIP, onset + len(word) + int(rng.integers(SAMPLE_RATE // 50, SAMPLE_RATE // 8)))
    clip = np.zeros(length, dtype=np.float32)
    clip[onset : onset + len(word)] = word[: length - onset]
    clip = add_noise_floor(clip, noise_db, rng)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, to_pcm16(clip), SAMPLE_RATE, subtype="PCM_16")
    return length / SAMPLE_RATE


def _colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink), peak-normalised to 0.5."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1]
    x = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    return (x / np.max(np.abs(x)) * 0.5).astype(np.float32)


def _write_background(ctx: BuildContext, out: Path) -> list[str]:
    """Real recordings (concatenated takes, 16 kHz mono) plus white and pink noise; returns file names."""
    out.mkdir(parents=True, exist_ok=True)
    fade = SAMPLE_RATE // 20
    credits = []
    for src in BACKGROUND_SOURCES:
        root = ctx.sources.extract(src.package)
        pieces = []
        for rel in src.files:
            path = ctx.sources.use(src.package, root / rel, src.licence, src.credit)
            x, sr = sf.read(str(path), dtype="float32", always_2d=True)
            y = resample(x.mean(axis=1), sr, SAMPLE_RATE)
            ramp = np.linspace(0.0, 1.0, min(fade, len(y) // 2), dtype=np.float32)
            y[: len(ramp)] *= ramp
            y[len(y) - len(ramp) :] *= ramp[::-1]
            pieces.append(y)
        x = np.concatenate(pieces)
        if src.max_seconds is not None:
            x = x[: int(src.max_seconds * SAMPLE_RATE)]
        x = x / max(float(np.max(np.abs(x))), 1e-9) * 0.5
        sf.write(str(out / src.name), to_pcm16(x), SAMPLE_RATE, subtype="PCM_16")
        credits.append(f"* `{src.name}`: {src.credit}; {src.licence}; Debian package `{src.package}`")
    for name, exponent in (("white_noise.wav", 0.0), ("pink_noise.wav", 1.0)):
        x = _colored_noise(int(_NOISE_SECONDS * SAMPLE_RATE), exponent, ctx.rng("noise", name))
        sf.write(str(out / name), to_pcm16(x), SAMPLE_RATE, subtype="PCM_16")
        credits.append(
            f"* `{name}`: generated ({'white' if exponent == 0 else 'pink (1/f)'} noise), like the real set's"
        )
    (out / "README.md").write_text(
        "Background recordings for the `_silence_` class and for noise augmentation.\n\n" + "\n".join(credits) + "\n"
    )
    return sorted(p.name for p in out.glob("*.wav"))


def build(ctx: BuildContext) -> None:
    plan = PLANS[ctx.profile]
    check_voices(VOICES[v] for vs in SPLIT_VOICES.values() for v in vs)
    root = ctx.out / TOP
    speakers: list[tuple[str, str, VoiceVariant]] = []  # (split, hash, variant)
    for split, names in SPLIT_VOICES.items():
        for name in names:
            for v in sample_variants(VOICES[name], plan.variants_per_voice, ctx.rng("speakers", name)):
                speakers.append((split, speaker_hash(v, split), v))
    if len({h for _, h, _ in speakers}) != len(speakers):
        raise RuntimeError("speaker hash collision")  # pragma: no cover - 8 hex digits, < 100 speakers

    jobs: list[SynthJob] = []
    split_of: dict[str, str] = {}
    for split, h, variant in speakers:
        rng = ctx.rng("speaker", h)
        gain_db, noise_db = float(rng.uniform(-14, -2)), float(rng.uniform(-70, -50))
        # Repetition n of any word uses the speaker's n-th rendition settings (rate and pitch nudged),
        # so festival still synthesises each speaker in a few batches rather than word by word.
        renditions = [variant] + [
            replace(
                variant,
                rate=round(variant.rate * float(rng.uniform(0.92, 1.08)), 3),
                f0=None if variant.f0 is None else round(variant.f0 * float(rng.uniform(0.95, 1.05)), 1),
            )
            for _ in range(plan.max_repetitions - 1)
        ]
        for word in WORDS_V2:
            if rng.random() < plan.skip_probability:
                continue
            for n in range(int(rng.integers(1, plan.max_repetitions + 1))):
                v = renditions[n]
                rel = f"{word}/{h}_nohash_{n}.wav"
                split_of[rel] = split
                jobs.append(
                    SynthJob(
                        rel,
                        word,
                        v,
                        int(rng.integers(2**63)),
                        (str(root / rel), gain_db + float(rng.uniform(-2, 2)), noise_db),
                    )
                )
    seconds = render(jobs, _write_clip, ctx.workers, desc=f"{NAME} ({ctx.profile})")

    for split, listname in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        (root / listname).write_text(
            "".join(f"{rel}\n" for rel in sorted(r for r, s in split_of.items() if s == split))
        )
    backgrounds = _write_background(ctx, root / BACKGROUND)
    (root / "README.md").write_text(
        f"Synthetic Speech Commands v0.02-layout set (offline mini-benchmark, profile {ctx.profile}).\n\n"
        "This is NOT Google's Speech Commands. It has its layout, file naming, list files and split rule, but every\n"
        "clip was spoken by an offline TTS voice variant (flite / festival); the 8-hex-digit prefix identifies the\n"
        "variant. Training voices: "
        + ", ".join(SPLIT_VOICES["training"])
        + "; validation: "
        + ", ".join(SPLIT_VOICES["validation"])
        + "; testing: "
        + ", ".join(SPLIT_VOICES["testing"])
        + ".\n"
    )

    per_split = {}
    for split in SPLIT_VOICES:
        idx = [i for i, j in enumerate(jobs) if split_of[j.key] == split]
        per_split[split] = {
            "clips": len(idx),
            "hours": round(sum(seconds[i] for i in idx) / 3600, 3),
            "speakers": sum(1 for s, _, _ in speakers if s == split),
            "voices": list(SPLIT_VOICES[split]),
        }
    ctx.summary.update(
        {
            "hours": round(sum(seconds) / 3600, 3),
            "clips": len(jobs),
            "words": len(WORDS_V2),
            "classes_superb": 12,
            "speakers": len(speakers),
            "shorter_than_1s": int(sum(s < 1.0 for s in seconds)),
            "splits": per_split,
            "background_noise": backgrounds,
            "split_rule": "which_set() of the dataset README on the speaker hash; "
            "hashes salted so each recorded person stays in one split",
        }
    )


register_builder(
    DatasetBuilder(
        name=NAME,
        version=VERSION,
        build=build,
        description="Speech Commands v0.02 layout, 35 words, TTS speakers, real background recordings",
    )
)
