"""CTC label sets, the CTC loss as SUPERB computes it, and decoding (greedy; optional beam search).

Label sets (index 0 is the CTC blank in both, as in s3prl where the blank is its first symbol):

* `PHONES39`: the 39 stress-free ARPAbet phones of SUPERB's libriphone PR task (the phone strings
  `tasks.datasets.librispeech` produces with `labels="phones"`).
* `CHARACTERS`: s3prl's ASR dictionary (`downstream/asr/char.dict`): `|` (word boundary), the 26
  letters and the apostrophe, in that file's order. s3prl's fairseq `Dictionary` also adds
  `<pad>`, `</s>` and `<unk>`, which CTC never emits for LibriSpeech text (every character is in
  the dictionary); this set leaves them out, so the output layer has 29 rather than 32 units.

Text <-> labels: transcripts are upper-cased and whitespace-normalised; a word boundary `|` sits
between words (not at the ends). Characters outside the set are an error naming the utterance
text, never silently mapped to an unknown symbol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .data.lexicon import PHONES

__all__ = ["BLANK", "Vocabulary", "PHONES39", "CHARACTERS", "ctc_loss", "min_frames", "greedy_decode",
           "BeamSearchDecoder"]

BLANK = 0
_BLANK_SYMBOL = "<blank>"


@dataclass(frozen=True)
class Vocabulary:
    """Output symbols of a CTC head; `symbols[0]` is the blank."""

    name: str
    symbols: tuple[str, ...]
    unit: str  # "phone" (labels are space-separated symbols) | "char" (labels are characters)
    word_boundary: str | None = None  # "|" for characters

    def __post_init__(self) -> None:
        if self.symbols[BLANK] != _BLANK_SYMBOL:
            raise ValueError(f"symbol {BLANK} must be the blank, got {self.symbols[BLANK]!r}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"{self.name}: repeated symbols")

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    def normalize(self, text: str) -> str:
        """The reference text that error rates compare against (upper case, single spaces)."""
        return " ".join(text.upper().split())

    def encode(self, text: str) -> list[int]:
        """Label ids of `text` (phones separated by spaces, or a transcript)."""
        index = self.index
        text = self.normalize(text)
        if self.unit == "phone":
            tokens = text.split()
        else:
            tokens = [self.word_boundary if c == " " else c for c in text]
        bad = sorted({t for t in tokens if t not in index or index[t] == BLANK})
        if bad:
            raise ValueError(f"{self.name}: {bad} not in the label set (text: {text[:80]!r})")
        return [index[t] for t in tokens]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of label ids (blanks dropped; repeats are *not* merged here, see `greedy_decode`)."""
        syms = [self.symbols[i] for i in ids if i != BLANK]
        if self.unit == "phone":
            return " ".join(syms)
        return " ".join("".join(syms).replace(self.word_boundary, " ").split())


PHONES39 = Vocabulary("phones39", (_BLANK_SYMBOL, *PHONES), "phone")
CHARACTERS = Vocabulary("s3prl-chars", (_BLANK_SYMBOL, "|", *"ETAONIHSRDLUMCWFGYPBVK'XJQZ"), "char", "|")


def ctc_loss(logits: Tensor, lengths: Tensor, targets: Sequence[Sequence[int]]) -> Tensor:
    """s3prl's objective: `nn.CTCLoss(blank=0, zero_infinity=True)`, mean over the batch of the
    per-utterance loss divided by its target length.

    Args:
        logits: `[B, T, C]` unnormalised scores; lengths: `[B]` valid frames.
        targets: B label id lists (no blanks).
    """
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [T, B, C]
    device = log_probs.device
    flat = torch.tensor([t for seq in targets for t in seq], dtype=torch.long, device=device)
    target_lengths = torch.tensor([len(seq) for seq in targets], dtype=torch.long, device=device)
    return torch.nn.functional.ctc_loss(
        log_probs, flat, lengths.long().to(device), target_lengths, blank=BLANK, reduction="mean", zero_infinity=True
    )


def min_frames(ids: Sequence[int]) -> int:
    """Fewest frames a CTC path for `ids` needs: one per label plus a blank between repeated labels."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def greedy_decode(logits: Tensor, lengths: Tensor) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks (s3prl's decoding).

    Args:
        logits: `[B, T, C]`; lengths: `[B]`. Returns B label id lists.
    """
    best = logits.argmax(-1).cpu()
    out = []
    for b, n in enumerate(lengths.tolist()):
        path = torch.unique_consecutive(best[b, : int(n)])
        out.append([int(i) for i in path if i != BLANK])
    return out


class BeamSearchDecoder:
    """Lexicon-free CTC beam search without a language model (torchaudio's flashlight decoder).

    SUPERB decodes greedily by default; its config offers flashlight's beam search with the
    LibriSpeech 4-gram LM, which is not available offline. This is the same decoder without the
    LM (beam 5, threshold 25 as in s3prl's `decoder_args`). Needs `flashlight-text`
    (`pip install flashlight-text`, the `beam` extra); character label sets only.
    """

    def __init__(self, vocab: Vocabulary, beam_size: int = 5, beam_threshold: float = 25.0):
        if vocab.unit != "char":
            raise ValueError("beam search is offered for character (ASR) label sets only")
        try:
            from torchaudio.models.decoder import ctc_decoder
        except Exception as exc:  # torchaudio raises a RuntimeError naming flashlight-text
            raise RuntimeError(
                f"beam search needs flashlight-text: pip install flashlight-text ({exc})"
            ) from exc
        self.vocab = vocab
        self.beam_size = beam_size
        self._decoder = ctc_decoder(
            lexicon=None, tokens=list(vocab.symbols), lm=None, nbest=1, beam_size=beam_size,
            beam_threshold=beam_threshold, blank_token=_BLANK_SYMBOL, sil_token=vocab.word_boundary,
        )

    def __call__(self, logits: Tensor, lengths: Tensor) -> list[list[int]]:
        """Same contract as `greedy_decode`."""
        emissions = logits.float().log_softmax(-1).cpu().contiguous()
        hyps = self._decoder(emissions, lengths.to(torch.int32).cpu())
        return [[int(i) for i in h[0].tokens if i != BLANK] if h else [] for h in hyps]
