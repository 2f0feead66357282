"""`librispeech`: an ASR/PR corpus in LibriSpeech's exact layout, read by offline TTS voices.

Layout (what `tasks.datasets.librispeech` and any LibriSpeech tool read)::

    librispeech/LibriSpeech/
        SPEAKERS.TXT  CHAPTERS.TXT  README.TXT  phone-lexicon.txt
        {train-clean-100,dev-clean,test-clean,test-asterisk}/<spk>/<chapter>/
            <spk>-<chapter>-<utt>.flac          16 kHz, 16-bit, mono
            <spk>-<chapter>.trans.txt           "<spk>-<chapter>-<utt> UPPER CASE WORDS"

Text: public-domain prose (The Jargon File 4.4.7 and Ambrose Bierce's The Devil's Dictionary,
see `text_source`), only sentences whose every word is in CMUdict. Speakers: variants of the
flite and festival voices (`tts`). Which recorded person a voice comes from decides its split:

* train-clean-100: KAL (flite kal16, festival kal_diphone), SLT (flite slt, festival HTS) and AWB
  (flite awb): both sexes, three synthesis methods (diphone, clustergen, HTS), so a model sees
  varied voices and cannot learn one synthesiser's artefacts;
* dev-clean: KED (festival ked_diphone) only;
* test-clean: RMS (flite rms) only, a natural-sounding clustergen voice no training voice shares.

Holding out whole recorded people (not just rate/pitch variants of a training voice) is what makes
the dev/test speakers really unseen, the property LibriSpeech's splits have. The price: dev and
test are single-person and male, which the README states. `test-asterisk` adds real human speech
(Asterisk prompts by Allison Smith, 8 kHz upsampled to 16 kHz) for a synthetic-to-real check.

Transcripts record what the engine actually said: both engines spell out a few words (`nth` ->
`N T H`), which `tts` reports, so labels never disagree with the audio.
Phones for PR come from `phone-lexicon.txt` (CMUdict, stress removed, first pronunciation: the
39-phone set SUPERB's libriphone uses); it covers every word of every split.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import asterisk
from .build import BuildContext, DatasetBuilder, register_builder
from .lexicon import PHONES, cmudict_lexicon, write_lexicon
from .text_source import TEXT_SOURCES, Passage, load_passages, source_files, text_pool
from .tts import (
    VOICES,
    SynthJob,
    VoiceVariant,
    WriteSpec,
    Written,
    check_voices,
    reconcile_words,
    render,
    resample,
    sample_variants,
    to_pcm16,
    write_speech,
)

__all__ = ["NAME", "SPLIT_VOICES", "ASTERISK_SPLIT", "LEXICON_FILE"]

NAME = "librispeech"
VERSION = "2"
TOP = "LibriSpeech"
LEXICON_FILE = "phone-lexicon.txt"
ASTERISK_SPLIT = "test-asterisk"
SAMPLE_RATE = 16_000

SPLIT_VOICES: dict[str, tuple[str, ...]] = {
    "train-clean-100": (
        "flite/kal16",
        "festival/kal_diphone",
        "flite/slt",
        "festival/cmu_us_slt_arctic_hts",
        "flite/awb",
    ),
    "dev-clean": ("festival/ked_diphone",),
    "test-clean": ("flite/rms",),
}

# TTS reads a little faster than LibriSpeech's volunteers; this words-per-second figure (measured
# over a mini build, pauses included) only sizes the text budget. Reported hours are measured.
_PLANNING_WORDS_PER_SECOND = 2.85
_RATE_RANGE = (0.8, 1.15)


@dataclass(frozen=True)
class Plan:
    hours: dict[str, float]  # planned audio per split (text is allotted by an estimate)
    variants_per_voice: dict[str, int]
    chapters_per_speaker: int
    asterisk_prompts: int | None  # None: every usable prompt


PLANS = {
    "tiny": Plan(
        hours={"train-clean-100": 2 / 60, "dev-clean": 0.75 / 60, "test-clean": 0.75 / 60},
        variants_per_voice={"train-clean-100": 2, "dev-clean": 2, "test-clean": 2},
        chapters_per_speaker=1,
        asterisk_prompts=24,
    ),
    "mini": Plan(
        hours={"train-clean-100": 3.15, "dev-clean": 0.36, "test-clean": 0.36},
        variants_per_voice={"train-clean-100": 8, "dev-clean": 8, "test-clean": 8},
        chapters_per_speaker=2,
        asterisk_prompts=None,
    ),
}


@dataclass(frozen=True)
class Speaker:
    id: int
    split: str
    variant: VoiceVariant
    gain_db: float
    noise_db: float


@dataclass(frozen=True)
class Utterance:
    split: str
    speaker: Speaker
    chapter: int
    index: int
    passage: Passage

    @property
    def uid(self) -> str:
        return f"{self.speaker.id}-{self.chapter}-{self.index:04d}"

    def relpath(self) -> Path:
        return Path(TOP, self.split, str(self.speaker.id), str(self.chapter), f"{self.uid}.flac")


def _estimate_seconds(p: Passage, rate: float = 1.0) -> float:
    return len(p.words) / (_PLANNING_WORDS_PER_SECOND * rate)


def _allot_text(passages: list[Passage], plan: Plan, rng: np.random.Generator) -> dict[str, list[Passage]]:
    """Whole dictionary entries go to one split (no topic leaks), filled in order test, dev, train."""
    by_entry: dict[tuple[str, str], list[Passage]] = defaultdict(list)
    for p in passages:
        by_entry[(p.source, p.entry)].append(p)
    entries = sorted(by_entry)
    order = rng.permutation(len(entries))
    splits = ["test-clean", "dev-clean", "train-clean-100"]
    allotted: dict[str, list[Passage]] = {s: [] for s in splits}
    seconds = {s: 0.0 for s in splits}
    k = 0
    for split in splits:
        while seconds[split] < plan.hours[split] * 3600:
            if k >= len(order):
                raise RuntimeError(
                    f"not enough usable text for the '{split}' split of {NAME}: "
                    f"{sum(map(len, allotted.values()))} passages allotted"
                )
            for p in by_entry[entries[order[k]]]:
                allotted[split].append(p)
                seconds[split] += _estimate_seconds(p)
            k += 1
    return allotted


def _speakers(plan: Plan, ctx: BuildContext) -> dict[str, list[Speaker]]:
    out: dict[str, list[Speaker]] = {}
    next_id = 1001
    for split, voice_names in SPLIT_VOICES.items():
        out[split] = []
        for name in voice_names:
            rng = ctx.rng("speakers", split, name)
            for variant in sample_variants(VOICES[name], plan.variants_per_voice[split], rng, _RATE_RANGE):
                out[split].append(
                    Speaker(next_id, split, variant, float(rng.uniform(-12, -2)), float(rng.uniform(-72, -58)))
                )
                next_id += 1
    return out


def _schedule(allotted: dict[str, list[Passage]], speakers: dict[str, list[Speaker]], plan: Plan) -> list[Utterance]:
    """Cut each split's text into contiguous chapters and deal them round-robin to its speakers."""
    utts: list[Utterance] = []
    next_chapter = 100001
    for split, passages in allotted.items():
        spk = speakers[split]
        n_chapters = len(spk) * plan.chapters_per_speaker
        bounds = np.linspace(0, len(passages), n_chapters + 1).round().astype(int)
        for c in range(n_chapters):
            chunk = passages[bounds[c] : bounds[c + 1]]
            speaker = spk[c % len(spk)]
            for i, p in enumerate(chunk):
                utts.append(Utterance(split, speaker, next_chapter, i, p))
            next_chapter += 1
    return utts


def _write_tables(out: Path, utts: list[Utterance], seconds: dict[str, float], extra_rows: list[tuple]) -> None:
    """SPEAKERS.TXT and CHAPTERS.TXT in LibriSpeech's pipe-separated format."""
    minutes_spk: dict[int, float] = defaultdict(float)
    minutes_ch: dict[int, float] = defaultdict(float)
    spk_info: dict[int, tuple[str, str, str]] = {}
    ch_info: dict[int, tuple[int, str, str, str]] = {}
    for u in utts:
        s = seconds[u.uid] / 60
        minutes_spk[u.speaker.id] += s
        minutes_ch[u.chapter] += s
        spk_info[u.speaker.id] = (u.speaker.variant.voice.sex, u.split, u.speaker.variant.describe())
        ch_info.setdefault(u.chapter, (u.speaker.id, u.split, u.passage.source, u.passage.entry))
    for spk_id, chapter, sex, split, minutes, name, source, title in extra_rows:
        minutes_spk[spk_id] += minutes
        minutes_ch[chapter] += minutes
        spk_info[spk_id] = (sex, split, name)
        ch_info[chapter] = (spk_id, split, source, title)
    lines = [
        "; Speakers of this synthetic LibriSpeech-layout corpus (see README.TXT).\n",
        "; NAME describes the voice variant: TTS voice, speaking-rate factor, target f0, vocal-tract factor.\n",
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n",
    ]
    for spk_id in sorted(spk_info):
        sex, split, name = spk_info[spk_id]
        lines.append(f"{spk_id:<5}| {sex} | {split:<17}| {minutes_spk[spk_id]:5.2f} | {name}\n")
    (out / TOP / "SPEAKERS.TXT").write_text("".join(lines))
    lines = [
        "; Chapters: contiguous text read by one speaker. BOOK = Debian package of the text, TITLE = first entry.\n",
        ";ID    |READER|MINUTES| SUBSET           | BOOK            | TITLE\n",
    ]
    for ch in sorted(ch_info):
        spk_id, split, source, title = ch_info[ch]
        lines.append(f"{ch:<7}| {spk_id:<5}| {minutes_ch[ch]:5.2f} | {split:<17}| {source:<16}| {title}\n")
    (out / TOP / "CHAPTERS.TXT").write_text("".join(lines))


def _write_transcripts(out: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """rows: (split, speaker, chapter, "uid TEXT"); one trans.txt per chapter, lines sorted by uid."""
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for split, spk, ch, line in rows:
        groups[(split, spk, ch)].append(line)
    for (split, spk, ch), lines in groups.items():
        path = out / TOP / split / spk / ch / f"{spk}-{ch}.trans.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in sorted(lines)))


def _reconcile(out: Path, utts: list[Utterance], results: list[Written], lexicon):
    """Transcripts say what the engine actually said (flite/festival spell out some words, e.g.
    `nth` -> `n t h`, see `reconcile_words`); an utterance with a spoken word outside the lexicon
    (which could not get phone labels) is removed."""
    kept, seconds, transcript = [], {}, {}
    respoken = dropped = 0
    for u, r in zip(utts, results, strict=True):
        said = " ".join(reconcile_words(u.passage.words, r.words, lexicon.homographs))
        if not said or not lexicon.covers(said.split()):
            (out / u.relpath()).unlink()
            dropped += 1
            continue
        respoken += said != u.passage.text
        kept.append(u)
        seconds[u.uid] = r.seconds
        transcript[u.uid] = said
    return kept, seconds, transcript, respoken, dropped


def _family(key: str) -> str:
    """Prompt family ("digits", "letters", ... or "prompts" for top-level files): one chapter each."""
    return key.split("/")[0] if "/" in key else "prompts"


def _upsample_to_flac(src: Path, dest: Path) -> float:
    import soundfile as sf

    x, sr = sf.read(str(src), dtype="float32")
    y = resample(x, sr, SAMPLE_RATE)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dest), to_pcm16(y), SAMPLE_RATE, subtype="PCM_16")
    return len(y) / SAMPLE_RATE


def _add_asterisk(ctx: BuildContext, plan: Plan, lexicon, speaker_id: int, chapter0: int):
    audio_root = ctx.sources.extract(asterisk.AUDIO_PACKAGE)
    text_root = ctx.sources.extract(asterisk.TEXT_PACKAGE)
    scan = asterisk.scan_prompts(audio_root, text_root, lexicon)
    prompts = scan.prompts
    if plan.asterisk_prompts is not None and plan.asterisk_prompts < len(prompts):
        pick = np.sort(ctx.rng("asterisk").choice(len(prompts), plan.asterisk_prompts, replace=False))
        prompts = [prompts[i] for i in pick]
    ctx.sources.use(asterisk.TEXT_PACKAGE, scan.transcript_file, asterisk.LICENCE, asterisk.CREDIT)
    families = sorted({_family(p.key) for p in prompts})
    chapter_of = {fam: chapter0 + i for i, fam in enumerate(families)}
    counters: dict[int, int] = defaultdict(int)
    rows, minutes = [], defaultdict(float)
    total_seconds = 0.0
    for p in prompts:
        ctx.sources.use(asterisk.AUDIO_PACKAGE, p.path, asterisk.LICENCE, asterisk.CREDIT)
        ch = chapter_of[_family(p.key)]
        uid = f"{speaker_id}-{ch}-{counters[ch]:04d}"
        counters[ch] += 1
        dest = ctx.out / TOP / ASTERISK_SPLIT / str(speaker_id) / str(ch) / f"{uid}.flac"
        seconds = _upsample_to_flac(p.path, dest)
        rows.append((ASTERISK_SPLIT, str(speaker_id), str(ch), f"{uid} {p.text}"))
        minutes[ch] += seconds / 60
        total_seconds += seconds
    table_rows = [
        (
            speaker_id,
            chapter_of[fam],
            "F",
            ASTERISK_SPLIT,
            minutes[chapter_of[fam]],
            "Allison Smith (human, Asterisk prompts, 8 kHz telephone band)",
            asterisk.TEXT_PACKAGE,
            fam,
        )
        for fam in families
    ]
    info = {
        "hours": round(total_seconds / 3600, 3),
        "utterances": len(prompts),
        "speakers": 1,
        "source": f"{asterisk.AUDIO_PACKAGE} ({asterisk.LICENCE}), {asterisk.CREDIT}",
        "prompts_dropped": dict(sorted(scan.dropped.items())),
    }
    return rows, table_rows, info, {p.text for p in prompts}


_README = """SYNTHETIC LIBRISPEECH-LAYOUT CORPUS (offline mini-benchmark, profile {profile})

This is NOT LibriSpeech. It has LibriSpeech's directory layout, file formats and transcript
conventions so that the same loaders and tools read it, but its speech was synthesised offline.

Text: {texts}. Only sentences whose every word is in the CMU Pronouncing Dictionary were kept.
Speakers: variants (speaking rate, mean f0, vocal-tract length) of the flite and festival voices
of Debian (SPEAKERS.TXT names each). Every variant of one recorded voice talent stays in one split:
  train-clean-100: {train}
  dev-clean:       {dev}
  test-clean:      {test}
dev-clean and test-clean therefore each hold one (male) voice talent in several variants.
{asterisk_split}: real human speech, the Asterisk telephony prompts recorded by Allison Smith
(CC-BY-SA-3.0), 8 kHz originals upsampled to 16 kHz; digits and symbols spelled out.

{lexicon}: word -> phones in the 39-phone ARPAbet set (CMUdict, stress removed, first
pronunciation), covering every transcript word, as SUPERB's phoneme recognition uses.
"""


def build(ctx: BuildContext) -> None:
    plan = PLANS[ctx.profile]
    lexicon = cmudict_lexicon()
    check_voices(VOICES[v] for voices in SPLIT_VOICES.values() for v in voices)

    extracted = {src.package: ctx.sources.extract(src.package) for src in TEXT_SOURCES}
    for package, path, licence, credit in source_files(extracted):
        ctx.sources.use(package, path, licence, credit)
    passages = [p for p in load_passages(extracted, lexicon) if text_pool(p) == NAME]
    allotted = _allot_text(passages, plan, ctx.rng("text"))
    speakers = _speakers(plan, ctx)
    utts = _schedule(allotted, speakers, plan)

    jobs = []
    for u in utts:
        jitter = float(ctx.rng("gain", u.uid).uniform(-1.0, 1.0))
        spec = WriteSpec(str(ctx.out / u.relpath()), SAMPLE_RATE, u.speaker.gain_db + jitter, u.speaker.noise_db)
        seed = int(ctx.rng("utt", u.uid).integers(2**63))
        jobs.append(SynthJob(u.uid, u.passage.text, u.speaker.variant, seed, (spec,)))
    results = render(jobs, write_speech, ctx.workers, desc=f"{NAME} ({ctx.profile})")
    utts, seconds, transcript, respoken, dropped = _reconcile(ctx.out, utts, results, lexicon)

    rows = [(u.split, str(u.speaker.id), str(u.chapter), f"{u.uid} {transcript[u.uid]}") for u in utts]
    last_speaker = max(s.id for ss in speakers.values() for s in ss)
    last_chapter = max(u.chapter for u in utts)
    a_rows, a_table, a_info, a_texts = _add_asterisk(ctx, plan, lexicon, last_speaker + 1, last_chapter + 1)
    _write_transcripts(ctx.out, rows + a_rows)
    _write_tables(ctx.out, utts, seconds, a_table)

    vocab = {w for t in transcript.values() for w in t.split()} | {w for t in a_texts for w in t.split()}
    write_lexicon(ctx.out / TOP / LEXICON_FILE, lexicon.subset(vocab))
    (ctx.out / TOP / "README.TXT").write_text(
        _README.format(
            profile=ctx.profile,
            texts="; ".join(f"{s.title}, {s.licence}, Debian package {s.package}" for s in TEXT_SOURCES),
            train=", ".join(SPLIT_VOICES["train-clean-100"]),
            dev=", ".join(SPLIT_VOICES["dev-clean"]),
            test=", ".join(SPLIT_VOICES["test-clean"]),
            asterisk_split=ASTERISK_SPLIT,
            lexicon=LEXICON_FILE,
        )
    )

    per_split = {}
    for split in SPLIT_VOICES:
        su = [u for u in utts if u.split == split]
        per_split[split] = {
            "hours": round(sum(seconds[u.uid] for u in su) / 3600, 3),
            "utterances": len(su),
            "speakers": len({u.speaker.id for u in su}),
            "voices": sorted({u.speaker.variant.voice.name for u in su}),
            "words": sum(len(transcript[u.uid].split()) for u in su),
        }
    per_split[ASTERISK_SPLIT] = a_info
    ctx.summary.update(
        {
            "hours": round(sum(v["hours"] for v in per_split.values()), 3),
            "utterances": sum(v["utterances"] for v in per_split.values()),
            "speakers": sum(v["speakers"] for v in per_split.values()),
            "vocabulary": len(vocab),
            "phones": len(PHONES),
            "splits": per_split,
            "text": [f"{s.title} - {s.licence} (Debian {s.package})" for s in TEXT_SOURCES],
            "lexicon": f"{lexicon.source}; first pronunciation; file LibriSpeech/{LEXICON_FILE}",
            "speaker_policy": "each recorded voice talent (KAL, SLT, AWB | KED | RMS) appears in one split only",
            "transcripts_following_the_engine": respoken,
            "utterances_dropped_unlabelable": dropped,
        }
    )


register_builder(
    DatasetBuilder(
        name=NAME,
        version=VERSION,
        build=build,
        description="LibriSpeech layout (train-clean-100, dev-clean, test-clean, test-asterisk), TTS voices, "
        "39-phone lexicon",
    )
)
