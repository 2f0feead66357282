"""Offline text-to-speech with flite and festival, and the voice variants that act as "speakers".

Nobody can download speech here, so the speech datasets are read by the synthetic voices Debian
ships: flite's `kal16` (diphone), `awb`, `rms`, `slt` (clustergen, trained on CMU ARCTIC
recordings) and festival's `kal_diphone`, `ked_diphone` and `cmu_us_slt_arctic_hts`. These are
only five recorded people (KAL, KED, AWB, RMS, SLT), so each dataset draws many *voice variants*
per voice, each with its own speaking rate, mean f0 (where the engine can set it) and
vocal-tract length. Vocal-tract length is changed by resampling, which scales formants and pitch
together the way a smaller or larger speaker would (the idea behind VTLP, Jaitly & Hinton 2013).
`Voice.person` names the recorded speaker behind a voice: builders keep every variant of one
person inside one split, so held-out speakers are really unseen.

Synthesis is deterministic: flite and festival have no randomness, post-processing draws from a
per-job seed, and every job is independent, so the output does not depend on the number of worker
processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf

from .debian import MissingToolError, require_tool


def _signal():
    """scipy.signal, imported on first use: it costs seconds, and most imports of this module
    (checking whether a dataset is current) never filter anything."""
    import scipy.signal

    return scipy.signal

__all__ = [
    "SAMPLE_RATE",
    "Voice",
    "VoiceVariant",
    "VOICES",
    "SynthJob",
    "Speech",
    "F0_RANGE_HZ",
    "sample_variants",
    "check_voices",
    "synthesize_batch",
    "render",
    "resample",
    "to_pcm16",
    "add_noise_floor",
    "WriteSpec",
    "Written",
    "write_speech",
    "merge_clitics",
]

SAMPLE_RATE = 16_000  # every voice is delivered at this rate; datasets resample from here

#: Typical speaking-f0 ranges of adult voices (Titze, *Principles of Voice Production*, 1994:
#: male means around 85-155 Hz, female around 165-255 Hz); variant f0 targets are drawn inside.
F0_RANGE_HZ = {"M": (85.0, 155.0), "F": (165.0, 255.0)}


@dataclass(frozen=True)
class Voice:
    name: str  # "<engine>/<voice>", used in ids and manifests
    engine: str  # "flite" | "festival"
    engine_voice: str  # flite -voice NAME | festival (voice_NAME)
    person: str  # the recorded speaker behind the voice; never split across train/dev/test
    sex: str  # "M" | "F"
    method: str  # "diphone" | "clustergen" | "hts": decides which controls work
    apt_package: str

    @property
    def f0_control(self) -> bool:
        # flite honours int_f0_target_mean for all its voices; festival's HTS engine ignores -fm.
        return self.engine == "flite" or self.method == "diphone"


VOICES: dict[str, Voice] = {
    v.name: v
    for v in (
        Voice("flite/kal16", "flite", "kal16", "KAL", "M", "diphone", "flite"),
        Voice("flite/awb", "flite", "awb", "AWB", "M", "clustergen", "flite"),
        Voice("flite/rms", "flite", "rms", "RMS", "M", "clustergen", "flite"),
        Voice("flite/slt", "flite", "slt", "SLT", "F", "clustergen", "flite"),
        Voice("festival/kal_diphone", "festival", "kal_diphone", "KAL", "M", "diphone", "festvox-kallpc16k"),
        Voice("festival/ked_diphone", "festival", "ked_diphone", "KED", "M", "diphone", "festvox-kdlpc16k"),
        Voice(
            "festival/cmu_us_slt_arctic_hts",
            "festival",
            "cmu_us_slt_arctic_hts",
            "SLT",
            "F",
            "hts",
            "festvox-us-slt-hts",
        ),
    )
}


@dataclass(frozen=True)
class VoiceVariant:
    """One synthetic "speaker": a voice with fixed rate, f0 and vocal-tract-length settings."""

    voice: Voice
    rate: float  # speaking-rate factor, > 1 is faster
    f0: float | None  # target mean f0 in Hz before the vocal-tract scaling; None = voice default
    vtl: float  # resampling factor (> 1: shorter vocal tract, higher formants and pitch)

    def describe(self) -> str:
        f0 = f"{self.f0:.0f}Hz" if self.f0 is not None else "default"
        return f"{self.voice.name} rate={self.rate:.2f} f0={f0} vtl={self.vtl:.2f}"

    @property
    def stretch(self) -> float:
        """Engine duration stretch that yields `rate` after the vocal-tract resampling shortens by 1/vtl."""
        return self.vtl / self.rate


def sample_variants(
    voice: Voice,
    n: int,
    rng: np.random.Generator,
    rate_range: tuple[float, float] = (0.85, 1.2),
    vtl_range: tuple[float, float] = (0.9, 1.1),
) -> list[VoiceVariant]:
    """`n` distinct variants of `voice`; rates and vtl are stratified so small `n` still spreads out."""
    out: list[VoiceVariant] = []
    lo_f0, hi_f0 = F0_RANGE_HZ[voice.sex]
    rate_strata, vtl_strata = rng.permutation(n), rng.permutation(n)
    for i in range(n):
        u_rate = (rate_strata[i] + rng.random()) / n
        u_vtl = (vtl_strata[i] + rng.random()) / n
        rate = round(rate_range[0] + u_rate * (rate_range[1] - rate_range[0]), 2)
        vtl = round(vtl_range[0] + u_vtl * (vtl_range[1] - vtl_range[0]), 2)
        f0 = round(float(rng.uniform(lo_f0, hi_f0)), 0) if voice.f0_control else None
        out.append(VoiceVariant(voice, rate, f0, vtl))
    return out


# -- jobs and results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthJob:
    key: str  # unique within a render() call; also the job's identity in error messages
    text: str  # what to say (any case; engines get lower case so capitals are not spelled out)
    variant: VoiceVariant
    seed: int  # for post-processing randomness (noise, placement); drawn by the builder
    payload: tuple = ()  # builder data the finishing function needs (paths, labels...)


@dataclass
class Speech:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE, peak-normalised to 1
    words: list[str]  # what the engine actually said, lower case (see `merge_clitics`)
    word_times: list[tuple[str, float, float]] | None = None  # (word, start s, end s); festival only

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def merge_clitics(words: Sequence, key=lambda w: w) -> list:
    """Both engines split `hacker's` into `hacker 's`; merge such pieces back into one word.

    `key` extracts the word from an item; items are strings or (word, start, end) tuples.
    """
    out: list = []
    for item in words:
        w = key(item).lower()
        if w.startswith("'") and out:
            prev = out.pop()
            if isinstance(item, tuple):  # festival may time a clitic 0.0: keep the later end
                out.append((prev[0] + w, prev[1], max(prev[2], item[2])))
            else:
                out.append(prev + w)
        else:
            out.append((w, *item[1:]) if isinstance(item, tuple) else w)
    return out


def _word_key(word: str) -> str:
    # flite names words after lexicon lookup: doesn't -> doesnt, the letter a -> _a
    return word.upper().replace("'", "").lstrip("_")


def reconcile_words(text_words: Sequence[str], spoken: Sequence, homographs: frozenset[str] = frozenset()) -> list:
    """What was said, written with the text's words wherever the engine said those words.

    Engines report words in their own spelling: apostrophes dropped, homographs renamed after the
    reading chosen (flite: `read` -> `red`), some tokens spelled out or expanded (`nth` ->
    `n t h`, `st` -> `saint`). Spans that differ only by spelling, or a homograph said one of its
    ways, keep the text's word; any other span takes the engine's words, so a transcript always
    says what the audio says. `spoken` items are words or (word, start, end) tuples (the result
    has the same kind, with the text's word and the engine's times).
    """
    import difflib

    timed = bool(spoken) and isinstance(spoken[0], tuple)
    names = [s[0] if timed else s for s in spoken]
    matcher = difflib.SequenceMatcher(
        a=[_word_key(w) for w in text_words], b=[_word_key(w) for w in names], autojunk=False
    )
    out: list = []
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        keep_text = op == "equal" or (
            op == "replace" and a1 - a0 == b1 - b0 and all(w.upper() in homographs for w in text_words[a0:a1])
        )
        for k in range(b1 - b0):
            word = text_words[a0 + k].upper() if keep_text else _word_key(names[b0 + k])
            out.append((word, *spoken[b0 + k][1:]) if timed else word)
    return out


# -- signal helpers ----------------------------------------------------------------------------------


def resample(x: np.ndarray, orig_sr: float, new_sr: float) -> np.ndarray:
    """Polyphase resampling with an exact rational ratio (deterministic, no threads)."""
    if orig_sr == new_sr:
        return x.astype(np.float32, copy=False)
    ratio = Fraction(int(round(new_sr)), int(round(orig_sr)))
    return _signal().resample_poly(x.astype(np.float64), ratio.numerator, ratio.denominator).astype(np.float32)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def add_noise_floor(x: np.ndarray, level_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white noise `level_db` below full scale: real recordings are never digitally silent."""
    return (x + rng.standard_normal(len(x)) * 10 ** (level_db / 20.0)).astype(np.float32)


@dataclass(frozen=True)
class WriteSpec:
    """How `write_speech` stores one utterance (carried in `SynthJob.payload[0]`)."""

    path: str
    sample_rate: int
    gain_db: float  # peak level of the speech relative to full scale
    noise_db: float  # white noise floor level relative to full scale
    subtype: str = "PCM_16"


@dataclass(frozen=True)
class Written:
    seconds: float
    words: list[str]  # what the engine said (may differ from the text: `nth` is spoken `n t h`)
    word_times: list[tuple[str, float, float]] | None


def write_speech(job: SynthJob, speech: Speech) -> Written:
    """Finishing function for `render`: gain, noise floor, resample, 16-bit file."""
    spec: WriteSpec = job.payload[0]
    rng = np.random.default_rng(job.seed)
    x = speech.samples * 10 ** (spec.gain_db / 20.0)
    x = add_noise_floor(x, spec.noise_db, rng)
    x = resample(x, SAMPLE_RATE, spec.sample_rate)
    path = Path(spec.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), to_pcm16(x), spec.sample_rate, subtype=spec.subtype)
    return Written(len(x) / spec.sample_rate, speech.words, speech.word_times)


# -- engines ---------------------------------------------------------------------------------------------


def _engine_text(text: str) -> str:
    # Upper-case words can be spelled out as acronyms by both engines; quotes would break Scheme.
    return re.sub(r"[^a-z' ]", " ", text.lower()).strip()


def _flite(job: SynthJob, tmp: Path) -> tuple[np.ndarray, int, list[str]]:
    exe = require_tool("flite")
    v = job.variant
    out = tmp / "flite.wav"
    cmd = [exe, "-voice", v.voice.engine_voice, "--setf", f"duration_stretch={v.stretch:.4f}"]
    if v.f0 is not None:
        cmd += ["--setf", f"int_f0_target_mean={v.f0:.1f}"]
    cmd += ["-pw", "-t", _engine_text(job.text), "-o", str(out)]  # -pw: print the words it says
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"flite failed for job '{job.key}' ({v.describe()}): {proc.stderr.strip()[-300:]}")
    x, sr = sf.read(str(out), dtype="float32")
    return x, sr, proc.stdout.split()


_SCHEME_PRELUDE = """
(define (bench-word-times utt)
  (mapcar (lambda (w)
     (list (item.name w)
           (item.feat w "R:SylStructure.daughter1.daughter1.R:Segment.p.end")
           (item.feat w "R:SylStructure.daughtern.daughtern.R:Segment.end")))
   (utt.relation.items utt 'Word)))
(define (bench-say key text file)
  (let ((utt (utt.synth (eval (list 'Utterance 'Text text)))))
    (utt.save.wave utt file 'riff)
    (format t "@@ %s" key)
    (mapcar (lambda (w) (format t " %s %s %s" (car w) (cadr w) (car (cddr w)))) (bench-word-times utt))
    (format t "\\n")))
"""


def _festival_settings(v: VoiceVariant) -> str:
    """Scheme that applies rate and f0 relative to the voice's own defaults (no hard-coded voice numbers)."""
    lines = [f"(voice_{v.voice.engine_voice})"]
    if v.voice.method == "hts":
        # HTS ignores Duration_Stretch; its engine option -r is a speed factor.
        lines.append(f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {1.0 / v.stretch:.4f}))))')
    else:
        lines.append(f"(Parameter.set 'Duration_Stretch (* (Parameter.get 'Duration_Stretch) {v.stretch:.4f}))")
    if v.f0 is not None:
        lines.append(
            "(set! int_lr_params (list"
            f" (list 'target_f0_mean {v.f0:.1f})"
            f" (list 'target_f0_std (* (cadr (assoc 'target_f0_std int_lr_params))"
            f" (/ {v.f0:.1f} (cadr (assoc 'target_f0_mean int_lr_params)))))"
            " (assoc 'model_f0_mean int_lr_params) (assoc 'model_f0_std int_lr_params)))"
        )
    return "\n".join(lines)


def _festival_batch(jobs: Sequence[SynthJob], tmp: Path) -> list[tuple[np.ndarray, int, list]]:
    """One festival process per batch: loading a voice costs more than synthesising a sentence."""
    exe = require_tool("festival")
    variant = jobs[0].variant
    if any(j.variant != variant for j in jobs):
        raise ValueError("a festival batch must share one voice variant")
    script = [_SCHEME_PRELUDE, _festival_settings(variant)]
    for i, job in enumerate(jobs):
        script.append(f'(bench-say "{i}" "{_engine_text(job.text)}" "{tmp / f"{i}.wav"}")')
    (tmp / "batch.scm").write_text("\n".join(script) + "\n")
    proc = subprocess.run([exe, "-b", str(tmp / "batch.scm")], capture_output=True, text=True)
    err = proc.stderr.strip()
    if proc.returncode != 0 or "unbound variable" in err or "SIOD ERROR" in err:
        if f"voice_{variant.voice.engine_voice}" in err:
            raise MissingToolError(
                f"festival voice '{variant.voice.engine_voice}' is not installed: "
                f"run `sudo apt-get install -y {variant.voice.apt_package}`"
            )
        raise RuntimeError(f"festival failed on batch starting with job '{jobs[0].key}': {err[-400:]}")
    words: dict[int, list] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("@@ "):
            parts = line.split()
            idx = int(parts[1])
            rest = parts[2:]
            words[idx] = [(rest[k], float(rest[k + 1]), float(rest[k + 2])) for k in range(0, len(rest), 3)]
    out = []
    for i, job in enumerate(jobs):
        path = tmp / f"{i}.wav"
        if not path.exists() or i not in words:
            raise RuntimeError(f"festival produced no audio for job '{job.key}': {err[-300:]}")
        x, sr = sf.read(str(path), dtype="float32")
        out.append((x, sr, words[i]))
    return out


def _apply_vtl(x: np.ndarray, sr: int, words: list, vtl: float) -> Speech:
    """Play the waveform `vtl` times faster, then resample to SAMPLE_RATE: formants and f0 scale by vtl."""
    y = resample(x, sr * vtl, SAMPLE_RATE)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > 0:
        y = y / peak
    if words and isinstance(words[0], tuple):  # festival: timed words
        timed = merge_clitics([(w, float(s) / vtl, float(e) / vtl) for w, s, e in words], key=lambda t: t[0])
        return Speech(y.astype(np.float32), [w for w, _, _ in timed], timed)
    return Speech(y.astype(np.float32), merge_clitics(words))


def synthesize_batch(jobs: Sequence[SynthJob]) -> list[Speech]:
    """Speak every job (all of one variant) and return 16 kHz float audio, peak-normalised to 1."""
    if not jobs:
        return []
    with tempfile.TemporaryDirectory(prefix="bench-tts-") as d:
        tmp = Path(d)
        variant = jobs[0].variant
        if variant.voice.engine == "festival":
            raw = _festival_batch(jobs, tmp)
        else:
            raw = [_flite(j, tmp) for j in jobs]
        return [_apply_vtl(x, sr, w, j.variant.vtl) for (x, sr, w), j in zip(raw, jobs)]


def check_voices(voices: Iterable[Voice]) -> None:
    """Fail early, naming the apt package, if an engine or a festival voice is missing."""
    voices = list(voices)
    if any(v.engine == "flite" for v in voices):
        exe = require_tool("flite")
        listed = subprocess.run([exe, "-lv"], capture_output=True, text=True).stdout
        for v in voices:
            if v.engine == "flite" and v.engine_voice not in listed.split():
                raise MissingToolError(f"flite has no voice '{v.engine_voice}': run `sudo apt-get install -y flite`")
    fest = [v for v in voices if v.engine == "festival"]
    if fest:
        exe = require_tool("festival")
        with tempfile.TemporaryDirectory(prefix="bench-tts-") as d:
            script = Path(d) / "list.scm"
            script.write_text("(print (voice.list))\n")
            listed = subprocess.run([exe, "-b", str(script)], capture_output=True, text=True).stdout
        for v in fest:
            if v.engine_voice not in listed:
                raise MissingToolError(
                    f"festival voice '{v.engine_voice}' is not installed: run `sudo apt-get install -y {v.apt_package}`"
                )


# -- parallel rendering -----------------------------------------------------------------------------

R = TypeVar("R")


def _run_chunk(args: tuple[Sequence[SynthJob], Callable[[SynthJob, Speech], R]]) -> list[R]:
    jobs, finish = args
    return [finish(job, speech) for job, speech in zip(jobs, synthesize_batch(jobs))]


def _chunks(jobs: Sequence[SynthJob], size: int) -> list[list[SynthJob]]:
    """Consecutive runs of one variant, cut to `size` (festival loads the voice once per chunk)."""
    out: list[list[SynthJob]] = []
    for job in jobs:
        if out and out[-1][-1].variant == job.variant and len(out[-1]) < size:
            out[-1].append(job)
        else:
            out.append([job])
    return out


def render(
    jobs: Sequence[SynthJob],
    finish: Callable[[SynthJob, Speech], R],
    workers: int = 1,
    desc: str = "tts",
    chunk_size: int = 24,
) -> list[R]:
    """Synthesise `jobs` in `workers` processes and return `finish(job, speech)` for each, in order.

    `finish` runs in the worker (it typically post-processes and writes the file) and must be a
    picklable top-level function. Results do not depend on `workers`.
    """
    from tqdm.auto import tqdm

    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("synthesis job keys must be unique")
    chunks = _chunks(sorted(jobs, key=lambda j: (j.variant.describe(), j.key)), chunk_size)
    results: dict[str, R] = {}
    bar = tqdm(total=len(jobs), desc=desc, unit="utt", disable=None, leave=False)
    try:
        if workers <= 1 or len(chunks) == 1:
            for chunk in chunks:
                for job, r in zip(chunk, _run_chunk((chunk, finish))):
                    results[job.key] = r
                bar.update(len(chunk))
        else:
            # fork: workers start instantly and need no `__main__` guard in the caller's script. It is
            # safe here because workers only run numpy/scipy/soundfile and subprocesses, never torch
            # (whose OpenMP pool is what makes forking a torch-using parent hazardous).
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            ctx = multiprocessing.get_context(method)
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {pool.submit(_run_chunk, (chunk, finish)): chunk for chunk in chunks}
                for fut in cf.as_completed(futures):
                    chunk = futures[fut]
                    for job, r in zip(chunk, fut.result()):
                        results[job.key] = r
                    bar.update(len(chunk))
    finally:
        bar.close()
    return [results[k] for k in keys]
