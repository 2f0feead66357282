"""Corpus-level token error rates: PER (phones), WER (words), CER (characters).

All three are one definition: the Levenshtein distance between reference and hypothesis token
sequences, summed over utterances, divided by the total number of reference tokens (what s3prl's
`downstream/ctc/metric.py` and jiwer compute; not a mean of per-utterance rates, which would
over-weight short utterances). Rates are percentages and can exceed 100 % (insertions).

Tokens: PER splits space-separated phones, WER splits words on whitespace, CER takes the
characters of the whitespace-normalised sentence *including* the single spaces between words
(jiwer's `cer`). Distances come from rapidfuzz, which works on sequences of strings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from rapidfuzz.distance import Levenshtein

__all__ = ["ErrorRate", "error_rate", "per", "wer", "cer", "words", "characters"]


@dataclass(frozen=True)
class ErrorRate:
    rate: float  # 100 * errors / reference tokens
    errors: int
    substitutions: int
    deletions: int
    insertions: int
    reference_tokens: int
    utterances: int

    def as_dict(self) -> dict:
        return asdict(self)


def words(text: str) -> list[str]:
    """Whitespace tokens (phones of a PR label, words of a transcript)."""
    return text.split()


def characters(text: str) -> list[str]:
    """Characters of the whitespace-normalised text, single spaces between words kept."""
    return list(" ".join(text.split()))


def error_rate(
    references: Sequence[str], hypotheses: Sequence[str], tokenize: Callable[[str], list[str]] = words
) -> ErrorRate:
    """Corpus-level error rate of `hypotheses` against `references` (same order, same length).

    Raises:
        ValueError: different numbers of references and hypotheses, or no reference token at all
            (the rate would be undefined). Empty individual references are allowed: every token
            hypothesised for them counts as an insertion.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    subs = dels = ins = total = 0
    for ref, hyp in zip(references, hypotheses):
        r, h = tokenize(ref), tokenize(hyp)
        total += len(r)
        for op in Levenshtein.editops(r, h):
            if op.tag == "replace":
                subs += 1
            elif op.tag == "delete":
                dels += 1
            else:
                ins += 1
    if total == 0:
        raise ValueError("the references contain no tokens: the error rate is undefined")
    errors = subs + dels + ins
    return ErrorRate(100.0 * errors / total, errors, subs, dels, ins, total, len(references))


def per(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRate:
    """Phone error rate over space-separated phone strings."""
    return error_rate(references, hypotheses, words)


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRate:
    """Word error rate over transcripts."""
    return error_rate(references, hypotheses, words)


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRate:
    """Character error rate over transcripts (spaces between words count as characters)."""
    return error_rate(references, hypotheses, characters)
