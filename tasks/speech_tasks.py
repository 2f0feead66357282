"""PR and ASR as evaluation problems: LibriSpeech splits, label set, references.

Splits follow SUPERB: train on `train-clean-100`, select learning rate and step on `dev-clean`,
score `test-clean`. `test-asterisk` (real human speech of the Asterisk prompts, 8 kHz recordings
upsampled to 16 kHz; shipped by the offline mini-benchmark) is scored as a *secondary* test set
when the corpus has it; the real LibriSpeech does not, and then it is simply absent.

PR labels are phone strings from `load_librispeech(labels="phones")` (39 phones, stress removed,
first pronunciation; utterances with words outside the lexicon are dropped and counted), ASR
labels are the transcripts. The utterance keys of both tasks come from the same corpus folders,
so frozen features extracted once (keyed by the corpus and splits, not the task) serve both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .clip_tasks import read_identity
from .ctc import CHARACTERS, PHONES39, Vocabulary
from .data.build import DatasetError
from .data.identity import DatasetIdentity
from .datasets.base import AudioExample
from .datasets.librispeech import find_root, load_librispeech

__all__ = ["CTCTask", "SPLITS", "SECONDARY_TEST", "load_ctc_task", "corpus_examples"]

SPLITS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
SECONDARY_TEST = "test-asterisk"
_TASKS = {"pr": ("phones", PHONES39, "per"), "asr": ("words", CHARACTERS, "wer")}


@dataclass
class CTCTask:
    name: str  # "pr" | "asr"
    vocab: Vocabulary
    metric: str  # "per" | "wer"
    splits: dict[str, list[AudioExample]]  # "train" / "dev" / "test" / "test-asterisk" -> examples
    corpus_root: Path  # the LibriSpeech folder
    dataset_dir: Path  # what identifies the dataset (built folder with MANIFEST.json, or the corpus)
    skipped: dict = field(default_factory=dict)  # unreadable file -> reason
    stats: dict = field(default_factory=dict)  # per split: utterances, OOV counts ...
    identity: DatasetIdentity | None = None  # content fingerprint of exactly the files read (tasks.data.identity)

    def references(self, split: str) -> list[str]:
        return [self.vocab.normalize(e.text) for e in self.splits[split]]

    def targets(self, split: str) -> list[list[int]]:
        return [self.vocab.encode(e.text) for e in self.splits[split]]

    @property
    def split_names(self) -> dict[str, str]:
        """Role -> corpus split name, e.g. {"train": "train-clean-100", ..., "test-asterisk": "test-asterisk"}."""
        out = dict(SPLITS)
        if SECONDARY_TEST in self.splits:
            out[SECONDARY_TEST] = SECONDARY_TEST
        return out


def _has_split(root: Path, split: str) -> bool:
    return (root / split).is_dir()


def corpus_examples(path=None, *, profile: str | None = "mini", root=None, skip_bad: bool = False,
                    ) -> dict[str, list[AudioExample]]:
    """Every utterance of the SUPERB splits (plus test-asterisk when present), as transcripts.

    The union over both tasks: what frozen features are extracted for, once.
    """
    top = find_root(path, profile, root)
    roles = {**SPLITS, **({SECONDARY_TEST: SECONDARY_TEST} if _has_split(top, SECONDARY_TEST) else {})}
    return {role: load_librispeech(path, split, labels="words", profile=profile, data_root=root,
                                   skip_bad_audio=skip_bad) for role, split in roles.items()}


def load_ctc_task(name: str, path=None, *, profile: str | None = "mini", root=None, skip_bad: bool = False,
                  lexicon=None, oov: str = "drop") -> CTCTask:
    """The `pr` or `asr` task on a LibriSpeech-layout corpus (`path`) or the built `profile`."""
    if name not in _TASKS:
        raise KeyError(f"'{name}' is not a CTC task; choose one of {', '.join(_TASKS)}")
    labels, vocab, metric = _TASKS[name]
    top = find_root(path, profile, root)
    for role, split in SPLITS.items():
        if not _has_split(top, split):
            have = sorted(p.name for p in top.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"{top}: the {name} task needs the '{split}' split ({role}); this corpus has {', '.join(have)}"
            )
    roles = {**SPLITS, **({SECONDARY_TEST: SECONDARY_TEST} if _has_split(top, SECONDARY_TEST) else {})}
    splits, skipped, stats, loaded = {}, {}, {}, []
    for role, split in roles.items():
        extra = {"lexicon": lexicon, "oov": oov} if labels == "phones" else {}
        examples = load_librispeech(path, split, labels=labels, profile=profile, data_root=root,
                                    skip_bad_audio=skip_bad, **extra)
        if not examples:
            raise DatasetError(f"{top / split}: no usable utterances"
                               + (f" ({len(examples.skipped)} bad file(s) skipped)" if examples.skipped else ""))
        for e in examples:  # fail before any training if a label cannot be encoded
            try:
                vocab.encode(e.text)
            except ValueError as exc:
                trans = e.path.parent / f"{e.key.rsplit('-', 1)[0]}.trans.txt"
                raise DatasetError(f"{trans}: utterance {e.key}: {exc}; fix its transcript") from None
        splits[role] = list(examples)
        skipped.update(examples.skipped)
        stats[role] = dict(examples.stats)
        loaded.append(examples)
    ident = read_identity(top, *loaded)
    return CTCTask(name, vocab, metric, splits, top, ident.directory, skipped, stats, ident)
