"""`quesst14`: a query-by-example set in the QUESST 2014 layout, with the official scorer's ground truth.

Layout (what s3prl's `quesst14_dtw`, torchaudio's `QUESST14` and `tasks.datasets.quesst14` read)::

    quesst14/quesst14Database/
        Audio/quesst14_00001.wav ...            documents, 8 kHz 16-bit mono
        dev_queries/quesst14_dev_0001.wav ...   queries spoken in isolation
        eval_queries/quesst14_eval_0001.wav ...
        scoring/language_key_{utterances,dev,eval}.lst   "quesst14Database/<dir>/<name>.wav nnenglish"
        scoring/groundtruth_quesst14_{dev,eval}/
            quesst14.ecf.xml                    every document and its duration
            quesst14_{dev,eval}.tlist.xml       every query (term) id
            quesst14_{dev,eval}.rttm            one LEXEME line per occurrence of a query in a document
        scoring/query_terms.tsv                 extra: what each query says, its hits and near misses
        scoring/document_transcripts.tsv        extra: what each document says
        README.txt

The ecf/tlist/rttm files follow the NIST STD 2006 formats that MediaEval's `score-TWV-Cnxe.sh`
(MediaEvalQUESST jar) reads via `$GT/*.ecf.xml $GT/*.tlist.xml $GT/*.rttm`; file names follow
the QUESST 2015 package README (`quesst2015.ecf.xml`, `quesst2015_dev.rttm`, ...) with the
2014 prefix s3prl uses (`groundtruth_quesst14_dev/quesst14_dev.rttm`). RTTM lines read
`LEXEME <document> 1 <tbeg> <dur> <query id> lex <NA> <NA>`.

Speech: documents are read by festival voices (persons KAL, KED, SLT) whose word timings give the
RTTM times; queries by flite voices of two other persons (AWB, RMS), so no query voice ever speaks
a document, as in QUESST where queries were recorded separately. Text comes from the 10 % of
dictionary entries reserved for QbE (`text_source.text_pool`), never from the ASR corpus.

Queries are single long words (>= 6 phones) and two-word phrases. Documents are chosen so that
most queries have 1-3 exact hits and every query has near misses: documents with a word whose
phones nearly match the query's (edit distance <= a third of its phones, e.g. SYSTEM vs SYSTEMS,
COMPUTER vs COMMUTER) but without the query itself. About 15 % of queries have no hit at all.
Ground truth is recomputed from the final documents' transcripts (exact word-sequence matches),
so it is correct even where a filler document happens to contain a query.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
from rapidfuzz.distance import Levenshtein

from .build import BuildContext, DatasetBuilder, register_builder
from .lexicon import Lexicon, cmudict_lexicon
from .text_source import TEXT_SOURCES, Passage, load_passages, source_files, text_pool
from .tts import (
    VOICES,
    SynthJob,
    VoiceVariant,
    WriteSpec,
    check_voices,
    reconcile_words,
    render,
    sample_variants,
    write_speech,
)

__all__ = ["NAME", "DOC_VOICES", "QUERY_VOICES", "phone_edit_distance", "find_occurrences"]

NAME = "quesst14"
VERSION = "2"
TOP = "quesst14Database"
SAMPLE_RATE = 8_000
LANGUAGE = "nnenglish"  # QUESST's language key for its (non-native) English recordings
ECF_NAME = "quesst14.ecf.xml"

DOC_VOICES = ("festival/kal_diphone", "festival/ked_diphone", "festival/cmu_us_slt_arctic_hts")
QUERY_VOICES = ("flite/awb", "flite/rms")
_MIN_TERM_PHONES = 6
_ZERO_HIT_SHARE = 0.15
_PHRASE_SHARE = 0.2


@dataclass(frozen=True)
class Plan:
    documents: int
    queries: dict[str, int]  # per query split
    doc_variants_per_voice: int
    query_variants_per_voice: int


PLANS = {
    "tiny": Plan(documents=40, queries={"dev": 6, "eval": 6}, doc_variants_per_voice=2, query_variants_per_voice=2),
    "mini": Plan(documents=400, queries={"dev": 50, "eval": 50}, doc_variants_per_voice=6, query_variants_per_voice=6),
}


@dataclass
class Query:
    split: str  # "dev" | "eval"
    words: tuple[str, ...]
    target_hits: int
    near_words: tuple[str, ...] = ()
    id: str = ""

    @property
    def text(self) -> str:
        return " ".join(self.words)


def phone_edit_distance(a: Sequence[str], b: Sequence[str], cutoff: int | None = None) -> int:
    """Levenshtein distance between phone sequences (rapidfuzz's C implementation; it ships with jiwer).

    With `cutoff`, any distance above it is reported as `cutoff + 1`.
    """
    return Levenshtein.distance(list(a), list(b), score_cutoff=cutoff)


def find_occurrences(words: list[str], term: tuple[str, ...]) -> list[int]:
    """Start indices where `term` occurs in `words` as a whole-word sequence."""
    n = len(term)
    return [i for i in range(len(words) - n + 1) if tuple(words[i : i + n]) == term]


def _near_words(term: tuple[str, ...], vocab: list[str], lexicon: Lexicon) -> list[str]:
    """Words that sound almost like the term but are not it (QbE's hard negatives)."""
    phones = tuple(lexicon.phones(term))
    limit = max(2, len(phones) // 3)
    out = []
    for w in vocab:
        if (w,) == term or w in term:
            continue
        p = lexicon[w]
        if abs(len(p) - len(phones)) <= limit and phone_edit_distance(p, phones, limit) <= limit:
            out.append(w)
    return out


def _choose_queries(
    passages: list[Passage], extra_vocab: set[str], plan: Plan, lexicon: Lexicon, rng: np.random.Generator
) -> tuple[list[Query], list[Passage]]:
    """Pick query terms and the documents that give them hits and near misses."""
    df: Counter[tuple[str, ...]] = Counter()
    for p in passages:
        ws = p.words
        df.update({(w,) for w in ws if len(lexicon[w]) >= _MIN_TERM_PHONES})
        df.update(
            {
                (a, b)
                for a, b in zip(ws, ws[1:])
                if min(len(lexicon[a]), len(lexicon[b])) >= 3
                and len(lexicon[a]) + len(lexicon[b]) >= _MIN_TERM_PHONES + 2
            }
        )
    vocab = sorted({w for p in passages for w in p.words})
    n_total = sum(plan.queries.values())
    n_zero = max(1, round(_ZERO_HIT_SHARE * n_total))
    n_phrase = round(_PHRASE_SHARE * (n_total - n_zero))
    singles = sorted(t for t, n in df.items() if len(t) == 1)
    phrases = sorted(t for t, n in df.items() if len(t) == 2 and n >= 1)
    picked_single = [singles[i] for i in rng.permutation(len(singles))]
    picked_phrase = [phrases[i] for i in rng.permutation(len(phrases))]

    # Hit-bearing terms first: each needs near-miss words in the text pool.
    terms: list[tuple[str, ...]] = []
    near: dict[tuple[str, ...], list[str]] = {}
    for pool, want in ((picked_phrase, n_phrase), (picked_single, n_total - n_zero - n_phrase)):
        got = 0
        for t in pool:
            if got == want:
                break
            if any(set(t) & set(u) for u in terms):
                continue  # no two queries share a word: hits of one would be near misses of another
            nw = _near_words(t, vocab, lexicon)
            if not nw:
                continue
            terms.append(t)
            near[t] = nw
            got += 1

    # Documents: hits and near misses for every term, then filler.
    by_id = {p.id: p for p in passages}
    chosen: list[str] = []
    taken: set[str] = set()

    def take(candidates: list[Passage], k: int) -> None:
        k = min(k, plan.documents - len(chosen))  # late terms get fewer hits rather than overflow
        for i in rng.permutation(len(candidates))[: max(0, k)]:
            taken.add(candidates[i].id)
            chosen.append(candidates[i].id)

    queries: list[Query] = []
    for t in terms:
        k = int(rng.integers(1, 4))
        take([p for p in passages if p.id not in taken and find_occurrences(p.words, t)], k)
        nw = set(near[t])
        take(
            [p for p in passages if p.id not in taken and nw & set(p.words) and not find_occurrences(p.words, t)],
            int(rng.integers(1, 3)),
        )
        queries.append(Query("", t, k, tuple(sorted(nw))))
    rest = [p for p in passages if p.id not in taken]
    take(rest, plan.documents - len(chosen))
    if len(chosen) < plan.documents:
        raise RuntimeError(f"{NAME}: only {len(chosen)} usable documents, the plan needs {plan.documents}")
    docs = [by_id[i] for i in chosen]

    # Zero-hit terms: long words absent from every document but with a near miss present.
    doc_vocab = sorted({w for p in docs for w in p.words})
    absent = sorted(w for w in extra_vocab - set(doc_vocab) if len(lexicon[w]) >= _MIN_TERM_PHONES)
    for i in rng.permutation(len(absent)):
        if sum(q.target_hits == 0 for q in queries) == n_zero:
            break
        w = absent[i]
        if any(w in q.words for q in queries):
            continue
        nw = _near_words((w,), doc_vocab, lexicon)
        if nw:
            queries.append(Query("", (w,), 0, tuple(sorted(nw))))

    order = rng.permutation(len(queries))
    queries = [queries[i] for i in order]
    n_dev = plan.queries["dev"]
    for i, q in enumerate(queries):
        q.split = "dev" if i < n_dev else "eval"
    for split in plan.queries:
        for j, q in enumerate(q for q in queries if q.split == split):
            q.id = f"quesst14_{split}_{j + 1:04d}"
    docs = [docs[i] for i in rng.permutation(len(docs))]
    return queries, docs


# -- ground-truth files ------------------------------------------------------------------------------


def _write_ground_truth(root: Path, split: str, queries: list[Query], docs: list[tuple[str, float, list]]) -> int:
    """ecf/tlist/rttm for one query split; returns the number of hits written."""
    gt = root / "scoring" / f"groundtruth_quesst14_{split}"
    gt.mkdir(parents=True, exist_ok=True)
    total = sum(d for _, d, _ in docs)
    version = f"bench offline mini-benchmark ({split})"
    ecf = [f'<ecf source_signal_duration="{total:.3f}" language="multiple" version={quoteattr(version)}>\n']
    for name, dur, _ in docs:
        ecf.append(
            f'  <excerpt audio_filename="{name}" channel="1" tbeg="0.000" dur="{dur:.3f}" source_type="splitcts"/>\n'
        )
    ecf.append("</ecf>\n")
    (gt / ECF_NAME).write_text("".join(ecf))
    tl = [
        f'<termlist ecf_filename="{ECF_NAME}" language="multiple" encoding="UTF-8" compareNormalize=""'
        f" version={quoteattr(version)}>\n"
    ]
    for q in queries:
        # QUESST publishes no query transcripts: termtext repeats the id (text is in query_terms.tsv).
        tl.append(f'  <term termid="{q.id}"><termtext>{q.id}</termtext></term>\n')
    tl.append("</termlist>\n")
    (gt / f"quesst14_{split}.tlist.xml").write_text("".join(tl))
    lines = []
    for name, _, words in docs:
        spoken = [w for w, _, _ in words]
        for q in queries:
            for i in find_occurrences(spoken, q.words):
                start, end = words[i][1], words[i + len(q.words) - 1][2]
                lines.append(f"LEXEME {name} 1 {start:.3f} {max(0.0, end - start):.3f} {q.id} lex <NA> <NA>\n")
    (gt / f"quesst14_{split}.rttm").write_text("".join(lines))
    return len(lines)


_README = """SYNTHETIC QUESST 2014-LAYOUT QUERY-BY-EXAMPLE SET (offline mini-benchmark, profile {profile})

This is NOT the MediaEval QUESST 2014 database. It has its directory layout, 8 kHz audio, language
key lists and ground-truth files (ecf/tlist/rttm, NIST STD 2006 formats) so that the same loaders
and scorer read it, but the speech was synthesised offline and is English only.

Documents ({n_docs}): festival voices {doc_voices} in several variants each.
Queries ({n_dev} dev, {n_eval} eval): words and two-word phrases spoken in isolation by flite
voices {query_voices}, people who never speak a document. Queries with no hit: {n_zero}.
Text: {texts}.
scoring/query_terms.tsv and scoring/document_transcripts.tsv are additions of this benchmark
(the real set publishes no transcripts); the scorer ignores them.
"""


def build(ctx: BuildContext) -> None:
    plan = PLANS[ctx.profile]
    lexicon = cmudict_lexicon()
    check_voices(VOICES[v] for v in DOC_VOICES + QUERY_VOICES)
    extracted = {src.package: ctx.sources.extract(src.package) for src in TEXT_SOURCES}
    for package, path, licence, credit in source_files(extracted):
        ctx.sources.use(package, path, licence, credit)
    all_passages = load_passages(extracted, lexicon)
    passages = [p for p in all_passages if text_pool(p) == NAME]
    other_vocab = {w for p in all_passages if text_pool(p) != NAME for w in p.words}
    queries, docs = _choose_queries(passages, other_vocab, plan, lexicon, ctx.rng("terms"))

    out = ctx.out / TOP
    doc_speakers = [
        v
        for name in DOC_VOICES
        for v in sample_variants(VOICES[name], plan.doc_variants_per_voice, ctx.rng("doc-voices", name))
    ]
    query_speakers = [
        v
        for name in QUERY_VOICES
        for v in sample_variants(VOICES[name], plan.query_variants_per_voice, ctx.rng("query-voices", name))
    ]

    jobs: list[SynthJob] = []
    doc_names = [f"quesst14_{i + 1:05d}" for i in range(len(docs))]
    for i, (name, p) in enumerate(zip(doc_names, docs)):
        rng = ctx.rng("doc", name)
        spec = WriteSpec(
            str(out / "Audio" / f"{name}.wav"), SAMPLE_RATE, float(rng.uniform(-10, -2)), float(rng.uniform(-66, -54))
        )
        jobs.append(SynthJob(name, p.text, doc_speakers[i % len(doc_speakers)], int(rng.integers(2**63)), (spec,)))
    for q in queries:
        rng = ctx.rng("query", q.id)
        spec = WriteSpec(
            str(out / f"{q.split}_queries" / f"{q.id}.wav"),
            SAMPLE_RATE,
            float(rng.uniform(-10, -2)),
            float(rng.uniform(-66, -54)),
        )
        variant: VoiceVariant = query_speakers[int(rng.integers(len(query_speakers)))]
        jobs.append(SynthJob(q.id, q.text, variant, int(rng.integers(2**63)), (spec,)))
    results = dict(zip((j.key for j in jobs), render(jobs, write_speech, ctx.workers, desc=f"{NAME} ({ctx.profile})")))
    for q in queries:
        said = tuple(reconcile_words(q.words, results[q.id].words, lexicon.homographs))
        if said != q.words:  # the engine must say exactly the term, or the ground truth would lie
            raise RuntimeError(f"{NAME}: query {q.id} '{q.text}' was spoken as '{' '.join(said)}'")
    # A document's transcript is what festival said (it spells out a few words: nth -> n t h).
    doc_rows = [
        (name, results[name].seconds, reconcile_words(p.words, results[name].word_times, lexicon.homographs))
        for name, p in zip(doc_names, docs, strict=True)
    ]
    spoken = {name: " ".join(w for w, _, _ in words) for name, _, words in doc_rows}
    scoring = out / "scoring"
    scoring.mkdir(parents=True, exist_ok=True)
    (scoring / "language_key_utterances.lst").write_text(
        "".join(f"{TOP}/Audio/{n}.wav {LANGUAGE}\n" for n in doc_names)
    )
    hits: dict[str, int] = {}
    for split in plan.queries:
        qs = [q for q in queries if q.split == split]
        (scoring / f"language_key_{split}.lst").write_text(
            "".join(f"{TOP}/{split}_queries/{q.id}.wav {LANGUAGE}\n" for q in qs)
        )
        hits[split] = _write_ground_truth(out, split, qs, doc_rows)

    hit_count = Counter()
    near_docs = Counter()
    for name in doc_names:
        words = spoken[name].split()
        for q in queries:
            found = len(find_occurrences(words, q.words))
            hit_count[q.id] += found
            near_docs[q.id] += bool(set(q.near_words) & set(words)) and not found
    (scoring / "query_terms.tsv").write_text(
        "query\tsplit\ttext\tphones\thits\tnear_miss_documents\tnear_miss_words\n"
        + "".join(
            f"{q.id}\t{q.split}\t{q.text}\t{' '.join(lexicon.phones(q.words))}\t{hit_count[q.id]}\t"
            f"{near_docs[q.id]}\t{' '.join(q.near_words)}\n"
            for q in sorted(queries, key=lambda q: q.id)
        )
    )
    (scoring / "document_transcripts.tsv").write_text(
        "document\ttext\n" + "".join(f"{n}\t{spoken[n]}\n" for n in doc_names)
    )
    n_zero = sum(1 for q in queries if hit_count[q.id] == 0)
    (out / "README.txt").write_text(
        _README.format(
            profile=ctx.profile,
            n_docs=len(docs),
            doc_voices=", ".join(DOC_VOICES),
            n_dev=plan.queries["dev"],
            n_eval=len(queries) - plan.queries["dev"],
            query_voices=", ".join(QUERY_VOICES),
            n_zero=n_zero,
            texts="; ".join(f"{s.title}, {s.licence}" for s in TEXT_SOURCES),
        )
    )
    doc_seconds = sum(d for _, d, _ in doc_rows)
    query_seconds = sum(results[q.id].seconds for q in queries)
    ctx.summary.update(
        {
            "hours": round((doc_seconds + query_seconds) / 3600, 3),
            "documents": len(docs),
            "document_hours": round(doc_seconds / 3600, 3),
            "queries": {s: sum(q.split == s for q in queries) for s in plan.queries},
            "queries_without_hit": {
                s: sum(q.split == s and hit_count[q.id] == 0 for q in queries) for s in plan.queries
            },
            "phrase_queries": sum(len(q.words) > 1 for q in queries),
            "hits": hits,
            "queries_with_near_misses": sum(near_docs[q.id] > 0 for q in queries),
            "document_voices": list(DOC_VOICES),
            "query_voices": list(QUERY_VOICES),
            "speakers": len(doc_speakers) + len(query_speakers),
            "sample_rate": SAMPLE_RATE,
            "text": [f"{s.title} - {s.licence} (Debian {s.package})" for s in TEXT_SOURCES],
        }
    )


register_builder(
    DatasetBuilder(
        name=NAME,
        version=VERSION,
        build=build,
        description="QUESST 2014 layout, 8 kHz, festival documents / flite queries, ecf+tlist+rttm ground truth",
    )
)
