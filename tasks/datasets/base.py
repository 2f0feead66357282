"""The unit every loader yields: one audio example with its label or transcript.

Loaders for the mini-benchmark and for the real corpora return lists of `AudioExample`, so task
runners never see a dataset's layout. Audio is read lazily through `tasks.audio.read_audio`
(the one place for resampling and down-mixing); `start`/`stop` select a segment, which is how
ICBHI respiratory cycles and Speech Commands' `_silence_` crops are represented without copying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..audio import audio_info, read_audio

__all__ = ["AudioExample"]


@dataclass(frozen=True)
class AudioExample:
    key: str  # unique within the dataset (stable across runs: used for caching and ordering)
    path: Path
    start: float | None = None  # seconds
    stop: float | None = None  # seconds
    label: str | None = None  # class name for classification tasks
    text: str | None = None  # transcript (ASR), space-separated phones (PR), or query text (QbE)
    meta: Mapping[str, Any] = field(default_factory=dict)  # fold, speaker, patient, device, ...

    def load(self, sample_rate: int) -> torch.Tensor:
        """Mono float32 waveform `(time,)` at `sample_rate`."""
        wav, _ = read_audio(self.path, sample_rate, start=self.start, stop=self.stop)
        return wav

    def duration(self) -> float:
        """Seconds of audio this example yields, from the file header (no decoding)."""
        info = audio_info(self.path)
        total = info.frames / info.samplerate
        stop = total if self.stop is None else min(self.stop, total)
        return max(0.0, stop - (self.start or 0.0))
