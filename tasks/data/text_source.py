"""Real public-domain English prose for the synthetic speech corpora, from Debian `main`.

Two texts, both explicitly in the public domain and packaged for the `dictd` server:

* **The Jargon File 4.4.7** (Raymond et al., 2003), package `dict-jargon`: "This document (the
  Jargon File) is in the public domain, to be freely used, shared, and modified." Modern,
  conversational English about computing culture.
* **The Devil's Dictionary** (Ambrose Bierce, 1911), package `dict-devil`: "A Public Domain Text,
  Copyright Expired". Witty late-19th-century prose, a different register and vocabulary.

Only prose paragraphs are used (verse, code and examples are indented differently and skipped).
Sentences are normalised to LibriSpeech-style transcripts and kept only when every word has a
CMUdict pronunciation, so phone labels never need a guessed (G2P) pronunciation. Consecutive
sentences of one entry are merged into passages of LibriSpeech-like length (about 5-35 words).
Every passage has a stable id (`source/entry/index`) so builders can partition text by hashing,
independently of the profile.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .lexicon import Lexicon, normalize_transcript

__all__ = [
    "TextSource",
    "Passage",
    "TEXT_SOURCES",
    "QBE_TEXT_SHARE",
    "load_passages",
    "sentences_of_entry",
    "text_pool",
    "stable_fraction",
    "source_files",
]

#: Share of dictionary entries reserved for the QbE documents (the rest feeds the ASR/PR corpus),
#: so the QUESST-layout documents never repeat LibriSpeech-layout sentences.
QBE_TEXT_SHARE = 0.1


@dataclass(frozen=True)
class TextSource:
    package: str
    dict_file: str  # path inside the package
    index_file: str
    title: str
    licence: str
    prose_indent: int  # prose paragraphs start with exactly this many spaces


TEXT_SOURCES: tuple[TextSource, ...] = (
    TextSource(
        package="dict-jargon",
        dict_file="usr/share/dictd/jargon.dict.dz",
        index_file="usr/share/dictd/jargon.index",
        title="The Jargon File 4.4.7 (E. S. Raymond et al., 2003)",
        licence="public domain (stated in the text: 'This document (the Jargon File) is in the public domain')",
        prose_indent=4,
    ),
    TextSource(
        package="dict-devil",
        dict_file="usr/share/dictd/devil.dict.dz",
        index_file="usr/share/dictd/devil.index",
        title="The Devil's Dictionary (Ambrose Bierce, 1911)",
        licence="public domain (copyright expired; 'A Public Domain Text, Copyright Expired')",
        prose_indent=0,
    ),
)


@dataclass(frozen=True)
class Passage:
    """A few consecutive sentences of one dictionary entry, as an upper-case transcript."""

    id: str  # "<package>/<entry>/<n>", stable across profiles and seeds
    source: str  # package name
    entry: str  # headword of the entry the text comes from
    text: str  # normalised transcript: upper case, words and apostrophes

    @property
    def words(self) -> list[str]:
        return self.text.split()


# -- dictd format -----------------------------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64_number(s: str) -> int:
    """dictd index offsets are big-endian base-64 numbers without padding."""
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def read_dictd(dict_path: Path, index_path: Path) -> list[tuple[str, str]]:
    """(headword, definition text) for every entry, in index order; dictd metadata entries skipped."""
    data = gzip.decompress(Path(dict_path).read_bytes())  # .dict.dz is gzip-compatible (dictzip)
    entries = []
    for line in Path(index_path).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
            continue
        start, size = _b64_number(parts[1]), _b64_number(parts[2])
        entries.append((parts[0], data[start : start + size].decode("utf-8", errors="replace")))
    return entries


# -- prose extraction ---------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(]*[A-Z])")
_ABBREVIATIONS = re.compile(r"\b(?:e\.g|i\.e|etc|vs|cf|esp|Mr|Mrs|Dr|St|viz|approx|U\.S)\.$")


def _paragraphs(body: str, indent: int) -> list[str]:
    """Prose paragraphs: consecutive lines indented by exactly `indent` spaces."""
    out: list[str] = []
    current: list[str] = []
    for line in body.splitlines():
        stripped = line.strip()
        is_prose = bool(stripped) and len(line) - len(line.lstrip(" ")) == indent
        if is_prose:
            current.append(stripped)
        elif current:
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def _clean(paragraph: str, source: TextSource) -> str:
    text = paragraph
    if source.prose_indent == 0:  # Devil's Dictionary: drop the "HEADWORD, n." lead
        text = re.sub(r"^[A-Z][A-Z' .-]*,\s*(?:[a-z]+\.\s*)+", "", text)
    text = re.sub(r"\{([^}]*)\}", r"\1", text)  # cross-reference braces
    text = re.sub(r"\[[^\]]*\]", " ", text)  # [techspeak], [from X] tags
    text = re.sub(r"^\s*\d+\.\s+", "", text)  # sense numbers
    text = re.sub(r"^(?:(?:n|v|vt|vi|adj|adv|excl|interj|prep|conj|pron|abbrev)\.,?\s+)+", "", text)  # part of speech
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip()


def sentences_of_entry(body: str, source: TextSource) -> list[str]:
    """Raw sentences of the prose paragraphs of one entry, in order."""
    sentences: list[str] = []
    for para in _paragraphs(body, source.prose_indent):
        pieces = _SENTENCE_END.split(_clean(para, source))
        merged: list[str] = []
        for piece in pieces:
            if merged and _ABBREVIATIONS.search(merged[-1]):
                merged[-1] += " " + piece
            else:
                merged.append(piece)
        sentences.extend(s.strip() for s in merged if s.strip())
    return sentences


def _usable(raw: str) -> bool:
    """Reject text whose spoken form is ambiguous: digits, code, URLs, all-caps acronyms."""
    if re.search(r"[0-9/@<>=_*#&%$|\\~^`]", raw):
        return False
    if re.search(r"\b[A-Z]{2,}\b", raw):  # acronyms may be spelled or read as words
        return False
    return True


def load_passages(
    source_dirs: dict[str, Path],
    lexicon: Lexicon,
    min_words: int = 5,
    max_words: int = 35,
    merge_below: int = 12,
) -> list[Passage]:
    """Every usable passage of every source, in source/entry order.

    A sentence is usable when it has no digits or symbols, no acronyms and every word is in
    `lexicon`. Adjacent usable sentences of an entry are merged while the passage has fewer than
    `merge_below` words and the result stays within `max_words`; passages shorter than
    `min_words` are dropped.
    """
    passages: list[Passage] = []
    for source in TEXT_SOURCES:
        root = Path(source_dirs[source.package])
        for headword, body in read_dictd(root / source.dict_file, root / source.index_file):
            sentences = sentences_of_entry(body, source)
            chunk: list[str] = []
            n = 0
            last_ok = -2
            for i, raw in enumerate(sentences):
                text = normalize_transcript(raw) if _usable(raw) else ""
                words = text.split()
                ok = bool(words) and len(words) <= max_words and lexicon.covers(words)
                if not ok:
                    continue
                adjacent = i == last_ok + 1
                if chunk and adjacent and len(chunk) < merge_below and len(chunk) + len(words) <= max_words:
                    chunk.extend(words)
                else:
                    if len(chunk) >= min_words:
                        passages.append(
                            Passage(f"{source.package}/{headword}/{n}", source.package, headword, " ".join(chunk))
                        )
                        n += 1
                    chunk = list(words)
                last_ok = i
            if len(chunk) >= min_words:
                passages.append(Passage(f"{source.package}/{headword}/{n}", source.package, headword, " ".join(chunk)))
    return passages


def stable_fraction(key: str) -> float:
    """A number in [0, 1) that depends only on `key` (for profile-independent partitions)."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / float(16**12)


def text_pool(passage: Passage) -> str:
    """ "quesst14" or "librispeech": which corpus may read this passage (decided per entry)."""
    return "quesst14" if stable_fraction(f"{passage.source}/{passage.entry}") < QBE_TEXT_SHARE else "librispeech"


def source_files(extracted: dict[str, Path]) -> list[tuple[str, Path, str, str]]:
    """(package, file, licence, credit) of every text file read, for the dataset manifest."""
    out = []
    for src in TEXT_SOURCES:
        root = Path(extracted[src.package])
        for rel in (src.dict_file, src.index_file):
            out.append((src.package, root / rel, src.licence, src.title))
    return out
