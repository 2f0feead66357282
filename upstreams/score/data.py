"""SCORE's training pairs: an utterance and its speed- and pitch-perturbed copy, in random order.

Utterances come from a pretraining corpus index (default: the speech rows of the mini profile's
`general` corpus, i.e. LibriSpeech train-clean-100, as in the paper). Everything random - which
utterances, the crop, the speed, the pitch direction, which side the student sees - is drawn from
the slot's own generator, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..training.config import ConfigError
from ..training.corpus import Segment, read_index, read_segment
from ..training.loop import EpochOrder, Slot
from .perturb import SEMITONES, SPEEDS, perturb

__all__ = ["PerturbedPairs"]


class PerturbedPairs:
    def __init__(self, index: str, source_prefix: str, sample_rate: int, max_seconds: float, seed: int,
                 speeds: tuple[float, ...] = SPEEDS, semitones: float = SEMITONES):
        segments = read_index(index)
        if source_prefix:
            segments = [s for s in segments if s.source.startswith(source_prefix)]
            if not segments:
                raise ConfigError(f"{index} has no rows whose source starts with {source_prefix!r}; "
                                  f"set data.source_prefix='' to use every row")
        self.segments: list[Segment] = segments
        self.index = index
        self.sample_rate = sample_rate
        self.max_samples = int(max_seconds * sample_rate)
        self.seed = seed
        self.speeds, self.semitones = tuple(speeds), semitones
        self.samples_per_epoch = len(segments)
        self._order = EpochOrder(len(segments), seed)

    def _pair(self, i: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        wav = read_segment(self.segments[i], self.sample_rate, str(self.index))
        if wav.numel() > self.max_samples:  # random crop keeps steps bounded on long utterances
            start = int(torch.randint(0, wav.numel() - self.max_samples + 1, (1,), generator=gen))
            wav = wav[start : start + self.max_samples]
        other = perturb(wav, gen, self.speeds, self.semitones)
        return (other, wav) if int(torch.randint(2, (1,), generator=gen)) else (wav, other)

    def get(self, slot: Slot) -> dict[str, Tensor]:
        gen = slot.generator(self.seed)
        ids = self._order.items(slot)
        pairs = [self._pair(i, gen) for i in ids]
        student = [p[0] for p in pairs]
        teacher = [p[1] for p in pairs]
        pad = torch.nn.utils.rnn.pad_sequence
        return {
            "student_wav": pad(student, batch_first=True), "student_len": torch.tensor([len(w) for w in student]),
            "teacher_wav": pad(teacher, batch_first=True), "teacher_len": torch.tensor([len(w) for w in teacher]),
        }
