"""Speech Commands (v0.01 and v0.02) in its native layout, with SUPERB's 12-class and the full-vocabulary views.

Layout::

    speech_commands_v0.02/
        <word>/<speaker hash>_nohash_<n>.wav     1 s or shorter, 16 kHz, 16-bit
        validation_list.txt  testing_list.txt      "<word>/<file>.wav" per line
        _background_noise_/*.wav                   long noise recordings

Splits follow the dataset's own rule: a clip is in validation or testing when its relative path is
listed there, otherwise in training (the lists were produced by `which_set`, which hashes the
speaker part of the file name into percentage buckets, so one speaker never spans splits).

Views:
* `"12"` (SUPERB KS, also HEAR's speech_commands): the ten command words, every other word as
  `_unknown_`, and `_silence_` examples cut from `_background_noise_`. s3prl draws a random
  1-s crop per epoch; here crops are fixed (seeded by split and index) so that embeddings can be
  cached and results repeat. Their number is `silence_fraction` times the number of command-word
  examples of the split (10 %, the TensorFlow reference recipe's `silence_percentage`). Validation
  and test keep `unknown_fraction` (10 %, the recipe's `unknown_percentage`) as many `_unknown_`
  clips, a fixed seeded draw: that is the make-up of SUPERB's test archive (12 classes of about 257
  clips), whereas the lists' own test split is two-thirds `_unknown_`, so that predicting `_unknown_`
  for everything scored 67-71 % on mini and a representation's accuracy said little about commands.
  Training keeps every clip (class-balanced sampling evens them out, as in s3prl).
* `"35"` (or `"all"`): every word folder is a class (30 classes on v0.01), no silence.

The loader accepts the `speech_commands_v0.0x` folder itself or a parent holding exactly one, and
also SUPERB's separate v0.01 test archive (`speech_commands_test_set_v0.01`: one folder per class,
`_silence_` and `_unknown_` included, no list files) for `split="test"` in the 12-class view.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..audio import MISSING_REMEDY, REMEDY, AudioReadError, audio_info
from ..data.build import DatasetError
from ._common import ExampleList, check_readable, dataset_not_found, resolve_path
from .base import AudioExample

__all__ = [
    "COMMANDS",
    "WORDS_V1",
    "WORDS_V2",
    "UNKNOWN",
    "SILENCE",
    "SPLITS",
    "which_set",
    "find_root",
    "load_speech_commands",
    "label_counts",
]

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
WORDS_V1 = COMMANDS + (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
)  # fmt: skip
WORDS_V2 = WORDS_V1 + ("backward", "forward", "follow", "learn", "visual")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
SPLITS = ("train", "validation", "test")
BACKGROUND = "_background_noise_"
CLIP_SECONDS = 1.0
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # ~134M; constant of the dataset README's which_set()
_NAME = "speech_commands"


def which_set(filename: str, validation_percentage: float = 10.0, testing_percentage: float = 10.0) -> str:
    """The dataset README's split rule: 'training', 'validation' or 'testing' from the speaker hash."""
    base_name = Path(filename).name
    hash_name = re.sub(r"_nohash_.*$", "", base_name)
    hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    percentage = (int(hashed, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < testing_percentage + validation_percentage:
        return "testing"
    return "training"


def _is_root(p: Path) -> bool:
    return (p / "validation_list.txt").is_file() and (p / "testing_list.txt").is_file()


def _is_test_set(p: Path) -> bool:
    """SUPERB's test archive (`speech_commands_test_set_v0.01`): class folders incl. `_silence_`, no lists."""
    return (p / SILENCE).is_dir() and (p / UNKNOWN).is_dir() and not (p / "testing_list.txt").exists()


def find_root(path: str | Path | None, profile: str | None = None, data_root: str | Path | None = None) -> Path:
    """The `speech_commands_v0.0x` folder at `path` (or the built `profile`), or directly below it."""
    path = resolve_path(_NAME, path, profile, data_root)
    if path is not None:
        path = Path(path)
        if _is_root(path) or _is_test_set(path):
            return path
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_dir() and (_is_root(p) or _is_test_set(p)))
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise ValueError(
                    f"{path} holds several Speech Commands versions ({', '.join(p.name for p in found)}); pass one"
                )
    raise dataset_not_found(
        _NAME, path, "a speech_commands_v0.0x folder with validation_list.txt and testing_list.txt", profile
    )


_LIST_LINE = re.compile(r"^[^/\\]+/[^/\\]+\.wav$")


def _read_list(root: Path, name: str) -> dict[str, int]:
    """`<word>/<file>.wav` -> line number of a split list; a line of another form raises `DatasetError`."""
    lst = root / name
    try:
        text = lst.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{lst}: not a text list file ({exc.reason}); restore the dataset's {name}") from None
    out: dict[str, int] = {}
    for no, line in enumerate(text.splitlines(), 1):
        rel = line.strip()
        if not rel:
            continue
        if not _LIST_LINE.match(rel) or rel.startswith("_"):
            raise DatasetError(f"{lst}:{no}: expected '<word>/<file>.wav', got {rel!r}; fix or delete the line")
        out.setdefault(rel, no)
    return out


def _silence_crops(root: Path, split: str, n: int, skipped: dict | None = None) -> list[AudioExample]:
    """`n` fixed 1-s crops from the background recordings, seeded by the split name.

    With `skipped` (a loader's `.skipped`, when bad audio is skipped), unusable recordings are left
    out and recorded there; otherwise the first one raises `AudioReadError` naming it."""
    files = sorted((root / BACKGROUND).glob("*.wav"))
    if n <= 0:
        return []
    if skipped is not None:
        good = []
        for f in files:
            problem = check_readable(f)
            if problem:
                skipped[str(f)] = problem
            else:
                good.append(f)
        files = good
    if not files:
        raise AudioReadError(f"{root / BACKGROUND}: no usable background recordings to cut '_silence_' examples "
                             f"from; restore the dataset's {BACKGROUND} folder")
    durations = []
    for f in files:
        info = audio_info(f)
        if info.frames == 0:
            raise AudioReadError(f"{f}: contains no audio samples (empty or truncated file); {REMEDY}")
        durations.append(info.frames / info.samplerate)
    rng = np.random.default_rng(_split_seed("silence", split))
    out = []
    for i in range(n):
        k = i % len(files)
        span = max(0.0, durations[k] - CLIP_SECONDS)
        start = round(float(rng.uniform(0.0, span)), 4)
        out.append(
            AudioExample(
                key=f"{SILENCE}/{split}/{i:05d}",
                path=files[k],
                start=start,
                stop=start + min(CLIP_SECONDS, durations[k]),
                label=SILENCE,
                meta={"split": split, "speaker": None, "word": SILENCE, "source": files[k].name},
            )
        )
    return out


def load_speech_commands(
    path: str | Path | None,
    split: str,
    view: str = "12",
    *,
    profile: str | None = None,
    data_root: str | Path | None = None,
    silence_fraction: float = 0.1,
    unknown_fraction: float | None = 0.1,
    skip_bad_audio: bool = False,
) -> ExampleList:
    """Examples of one split (`train`, `validation`/`dev`, `test`) in the 12-class or full view.

    `path` is the dataset folder or its parent; with `path=None` the built `profile` under
    `data_root` (default `$BENCH_DATA` or the user cache) is used.

    Labels are the word (full view) or the SUPERB class (12-class view). `meta` holds `word`,
    `speaker` (the hash) and `utterance` (the `_nohash_` number). With `skip_bad_audio`, files that
    are empty, truncated or unreadable are left out and listed in `.skipped`; otherwise reading
    such a file later raises `AudioReadError` naming it. `unknown_fraction=None` keeps every
    `_unknown_` clip of validation and test (the lists' own split, two-thirds `_unknown_`).
    """
    split = {"dev": "validation", "valid": "validation", "training": "train", "testing": "test"}.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown Speech Commands split '{split}'; choose one of {', '.join(SPLITS)}")
    if view not in ("12", "35", "all"):
        raise ValueError(f"unknown Speech Commands view '{view}'; choose '12' (SUPERB) or '35' (all words)")
    root = find_root(path, profile, data_root)
    if _is_test_set(root):
        return _load_test_set(root, split, view, skip_bad_audio)
    validation, testing = _read_list(root, "validation_list.txt"), _read_list(root, "testing_list.txt")
    both = sorted(set(validation) & set(testing))
    if both:
        raise DatasetError(f"{root / 'testing_list.txt'}:{testing[both[0]]}: {both[0]} is also in validation_list.txt "
                           f"(line {validation[both[0]]}); a clip belongs to one split")
    words = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    examples = ExampleList()
    examples.sources += [root / "validation_list.txt", root / "testing_list.txt"]
    listed = validation if split == "validation" else testing if split == "test" else {}
    for rel, no in listed.items():  # a listed clip that is not there
        wav = root / rel
        if not wav.is_file():
            where = f"listed in {'validation' if split == 'validation' else 'testing'}_list.txt:{no}"
            if not skip_bad_audio:
                raise AudioReadError(f"{wav}: file not found ({where}); {MISSING_REMEDY}")
            examples.skipped[str(wav)] = f"file not found ({where})"
    for word in words:
        for wav in sorted((root / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            in_split = "validation" if rel in validation else "test" if rel in testing else "train"
            if in_split != split:
                continue
            if skip_bad_audio:
                problem = check_readable(wav)
                if problem:
                    examples.skipped[str(wav)] = problem
                    continue
            speaker, _, utt = wav.stem.partition("_nohash_")
            label = word if view != "12" else (word if word in COMMANDS else UNKNOWN)
            examples.append(
                AudioExample(
                    key=rel,
                    path=wav,
                    label=label,
                    meta={"split": split, "word": word, "speaker": speaker, "utterance": utt},
                )
            )
    if view == "12":
        n_commands = sum(1 for e in examples if e.label in COMMANDS)
        if split != "train" and unknown_fraction is not None:
            _keep_unknown(examples, split, unknown_fraction, n_commands)
        examples.extend(_silence_crops(root, split, int(round(silence_fraction * n_commands)),
                                       examples.skipped if skip_bad_audio else None))
    examples.stats["version"] = root.name
    examples.stats["classes"] = sorted({e.label for e in examples})
    return examples


def _split_seed(kind: str, split: str) -> int:
    """A seed that depends only on what is drawn and for which split, so every run draws the same clips."""
    return int(hashlib.sha1(f"{kind}/{split}".encode()).hexdigest()[:12], 16)


def _keep_unknown(examples: ExampleList, split: str, fraction: float, n_commands: int) -> None:
    """Keep a fixed draw of `fraction` x `n_commands` `_unknown_` clips, in their listing order."""
    unknown = [i for i, e in enumerate(examples) if e.label == UNKNOWN]
    n = int(round(fraction * n_commands))
    examples.stats["unknown_kept"] = (f"{min(n, len(unknown))} of {len(unknown)} (a seeded draw of {fraction:.0%} of "
                                      f"the command clips, the make-up of SUPERB's test archive)")
    if n >= len(unknown):
        return
    kept = set(np.random.default_rng(_split_seed("unknown", split)).choice(unknown, size=n, replace=False).tolist())
    examples[:] = [e for i, e in enumerate(examples) if e.label != UNKNOWN or i in kept]


def _load_test_set(root: Path, split: str, view: str, skip_bad_audio: bool) -> ExampleList:
    """SUPERB's fixed 12-class test set: the folder name is the label, silence clips are files."""
    if split != "test" or view != "12":
        raise ValueError(f"{root} is the 12-class test archive: it only serves split='test', view='12'")
    examples = ExampleList()
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for wav in sorted(label_dir.glob("*.wav")):
            if skip_bad_audio:
                problem = check_readable(wav)
                if problem:
                    examples.skipped[str(wav)] = problem
                    continue
            speaker, _, utt = wav.stem.partition("_nohash_")
            examples.append(
                AudioExample(
                    key=f"{label_dir.name}/{wav.name}",
                    path=wav,
                    label=label_dir.name,
                    meta={"split": "test", "word": label_dir.name, "speaker": speaker, "utterance": utt},
                )
            )
    examples.stats.update({"version": root.name, "classes": sorted({e.label for e in examples})})
    return examples


def label_counts(examples: list[AudioExample]) -> dict[str, int]:
    return dict(sorted(Counter(e.label for e in examples).items()))
