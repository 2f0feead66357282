"""Real human speech available offline: the Asterisk PBX prompts recorded by Allison Smith.

Debian `main` ships them as `asterisk-core-sounds-en-wav` (8 kHz 16-bit wav, one female speaker,
CC-BY-SA-3.0) and their transcripts as `core-sounds-en.txt.gz` in `asterisk-core-sounds-en`.
They are the only natural speech the suite can use, so the LibriSpeech-layout corpus adds them as
an extra test split: a check of how far scores on synthetic voices carry over to a human voice.

Transcript lines look like `agent-pass: Please enter your password followed by the pound key.`
Prompts whose transcript is an annotation (`[ascending tones]`, `(10 seconds of silence)`, notes
about what is *not* said) are dropped, as are prompts with a word outside the lexicon after
normalisation (digits spelled out, upper case): their phone labels would have to be guessed.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

from .lexicon import Lexicon, normalize_transcript

__all__ = ["AUDIO_PACKAGE", "TEXT_PACKAGE", "LICENCE", "CREDIT", "Prompt", "PromptScan", "scan_prompts"]

AUDIO_PACKAGE = "asterisk-core-sounds-en-wav"
TEXT_PACKAGE = "asterisk-core-sounds-en"
LICENCE = "CC-BY-SA-3.0"
CREDIT = "Asterisk core sounds, recorded by Allison Smith (theivrvoice.com), financed by Digium, Inc."
_SOUNDS = "usr/share/asterisk/sounds/en_US_f_Allison"
_TRANSCRIPTS = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"


@dataclass(frozen=True)
class Prompt:
    key: str  # e.g. "digits/7" (the path below the sounds directory, without .wav)
    path: Path
    text: str  # normalised upper-case transcript


@dataclass
class PromptScan:
    prompts: list[Prompt] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    transcript_file: Path | None = None


def scan_prompts(audio_root: Path, text_root: Path, lexicon: Lexicon) -> PromptScan:
    """Usable prompts in transcript-file order, plus counts of what was dropped and why."""
    scan = PromptScan(transcript_file=Path(text_root) / _TRANSCRIPTS)
    sounds = Path(audio_root) / _SOUNDS
    seen: set[str] = set()

    def drop(reason: str) -> None:
        scan.dropped[reason] = scan.dropped.get(reason, 0) + 1

    with gzip.open(scan.transcript_file, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith(";") or ":" not in line:
                continue
            key, raw = (part.strip() for part in line.split(":", 1))
            if key in seen:
                drop("duplicate key")
                continue
            seen.add(key)
            if re.search(r"[\[\]()]", raw) or not raw:
                drop("annotation instead of words")
                continue
            wav = sounds / f"{key}.wav"
            if not wav.exists():
                drop("no audio file")
                continue
            text = normalize_transcript(raw)
            if not text:
                drop("empty after normalisation")
                continue
            if not lexicon.covers(text.split()):
                drop("word outside the lexicon")
                continue
            scan.prompts.append(Prompt(key, wav, text))
    return scan
