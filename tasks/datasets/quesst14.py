"""QUESST 2014 (query-by-example spoken term detection) in its native layout, with its ground truth.

Layout (MediaEval's `quesst14Database`)::

    Audio/quesst14_NNNNN.wav            documents (8 kHz)
    {dev,eval}_queries/quesst14_{dev,eval}_NNNN.wav
    scoring/language_key_{utterances,dev,eval}.lst       "<top>/<dir>/<name>.wav <language>"
    scoring/groundtruth_quesst14_{dev,eval}/*.ecf.xml, *.tlist.xml, *.rttm

Which files exist comes from the language key lists, exactly as s3prl and torchaudio read them;
by default only English (`nnenglish`), the subset SUPERB's QbE scores. The ground truth is read
from the same ecf/tlist/rttm files MediaEval's scorer reads: a (query, document) pair is a target
trial when the rttm has a `LEXEME <document> ... <query>` line. Query transcripts are not part of
QUESST; the offline mini-benchmark adds them in `scoring/query_terms.tsv` and this loader puts them
in `AudioExample.text` when present (None for the real corpus).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import MISSING_REMEDY, AudioReadError
from ..data.build import DatasetError
from ._common import ExampleList, check_readable, dataset_not_found, resolve_path
from .base import AudioExample

__all__ = ["Occurrence", "QbESplit", "find_root", "load_quesst14", "read_rttm", "read_ecf", "read_tlist"]

_NAME = "quesst14"
_TOP = "quesst14Database"
SPLITS = ("dev", "eval")


@dataclass(frozen=True)
class Occurrence:
    document: str
    tbeg: float
    dur: float


@dataclass
class QbESplit:
    """Queries of one split, the shared documents and which documents contain which query."""

    split: str
    queries: ExampleList
    documents: ExampleList
    occurrences: dict[str, list[Occurrence]]  # query id -> where it occurs (empty list: no hit)
    ecf_durations: dict[str, float] = field(default_factory=dict)  # document -> seconds, from the ecf
    ground_truth_dir: Path | None = None

    def is_hit(self, query: str, document: str) -> bool:
        return any(o.document == document for o in self.occurrences.get(query, ()))

    def targets(self) -> set[tuple[str, str]]:
        """All (query, document) pairs that are target trials."""
        return {(q, o.document) for q, occ in self.occurrences.items() for o in occ}


def _is_root(p: Path) -> bool:
    return (p / "scoring" / "language_key_utterances.lst").is_file()


def find_root(path: str | Path | None, profile: str | None = None, data_root: str | Path | None = None) -> Path:
    """The `quesst14Database` folder: `path` itself, `path/quesst14Database`, or the built `profile`'s."""
    path = resolve_path(_NAME, path, profile, data_root)
    if path is not None:
        for candidate in (path, path / _TOP):
            if _is_root(candidate):
                return candidate
    raise dataset_not_found(_NAME, path, "a quesst14Database folder with scoring/language_key_utterances.lst", profile)


def _read_language_key(root: Path, name: str, language: str | None) -> list[tuple[Path, str]]:
    out = []
    lst = root / "scoring" / name
    for lineno, line in enumerate(lst.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DatasetError(f"{lst}:{lineno}: expected '<path> <language>', got {line.strip()!r}; fix or delete the line")
        rel, lang = parts
        if language is not None and lang != language:
            continue
        # The listed path starts with the database's own top folder; drop it like s3prl does.
        out.append((root / re.sub(r"^.*?/", "", rel), lang))
    return out


def read_rttm(path: Path) -> dict[str, list[Occurrence]]:
    """query id -> occurrences, from the `LEXEME <file> <chnl> <tbeg> <dur> <term> ...` lines."""
    occ: dict[str, list[Occurrence]] = defaultdict(list)
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] != "LEXEME":
            continue
        if len(parts) < 6:
            raise DatasetError(f"{path}:{lineno}: LEXEME line needs file, channel, tbeg, dur and term: {line.strip()!r}")
        try:
            occ[parts[5]].append(Occurrence(parts[1], float(parts[3]), float(parts[4])))
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: LEXEME tbeg and dur must be numbers: {line.strip()!r}") from None
    return dict(occ)


def read_ecf(path: Path) -> dict[str, float]:
    """document -> duration (s) from the experiment control file's excerpts."""
    tree = ET.parse(path)
    return {e.get("audio_filename"): float(e.get("dur")) for e in tree.getroot().iter("excerpt")}


def read_tlist(path: Path) -> list[str]:
    """Term (query) ids in file order."""
    return [t.get("termid") for t in ET.parse(path).getroot().iter("term")]


def _ground_truth_file(gt: Path, pattern: str) -> Path:
    found = sorted(gt.glob(pattern))
    if len(found) != 1:
        raise DatasetError(f"{gt}: expected exactly one {pattern} (the scorer reads $GT/{pattern}), found {len(found)}")
    return found[0]


def _query_texts(root: Path) -> dict[str, str]:
    tsv = root / "scoring" / "query_terms.tsv"
    if not tsv.is_file():
        return {}
    lines = tsv.read_text().splitlines()
    header = lines[0].split("\t")
    qi, ti = header.index("query"), header.index("text")
    return {cols[qi]: cols[ti] for cols in (line.split("\t") for line in lines[1:] if line)}


def load_quesst14(
    path: str | Path | None,
    split: str,
    *,
    language: str | None = "nnenglish",
    profile: str | None = None,
    data_root: str | Path | None = None,
    skip_bad_audio: bool = False,
) -> QbESplit:
    """Queries of `split` ("dev"/"eval"), all documents, and the ground truth, for one language (None: all)."""
    split = {"test": "eval", "valid": "dev", "validation": "dev"}.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown QUESST split '{split}'; choose dev or eval")
    root = find_root(path, profile, data_root)
    gt = root / "scoring" / f"groundtruth_quesst14_{split}"
    if not gt.is_dir():
        raise dataset_not_found(_NAME, gt, f"the ground-truth folder groundtruth_quesst14_{split}", profile)
    gt_files = [_ground_truth_file(gt, pattern) for pattern in ("*.rttm", "*.ecf.xml", "*.tlist.xml")]
    occurrences = read_rttm(gt_files[0])
    try:
        ecf = read_ecf(gt_files[1])
        terms = read_tlist(gt_files[2])
    except (ET.ParseError, TypeError, ValueError) as exc:
        raise DatasetError(f"{gt}: unreadable ground-truth XML ({exc}); restore the QUESST scoring folder") from None
    texts = _query_texts(root)

    def collect(name: str, kind: str) -> ExampleList:
        out = ExampleList()
        for wav, lang in _read_language_key(root, name, language):
            if skip_bad_audio:
                problem = f"file not found (listed in scoring/{name})" if not wav.exists() else check_readable(wav)
                if problem:
                    out.skipped[str(wav)] = problem
                    continue
            elif not wav.exists():
                raise AudioReadError(f"{wav}: file not found (listed in scoring/{name}); {MISSING_REMEDY}")
            key = wav.stem
            out.append(
                AudioExample(
                    key=key,
                    path=wav,
                    text=texts.get(key) if kind == "query" else None,
                    meta={"kind": kind, "language": lang, "split": split},
                )
            )
        return out

    queries = collect(f"language_key_{split}.lst", "query")
    documents = collect("language_key_utterances.lst", "document")
    queries.sources += [root / "scoring" / f"language_key_{split}.lst", *gt_files]
    if (root / "scoring" / "query_terms.tsv").is_file():
        queries.sources.append(root / "scoring" / "query_terms.tsv")
    documents.sources.append(root / "scoring" / "language_key_utterances.lst")
    unknown = {q for q in occurrences if q not in set(terms)}
    if unknown:
        raise DatasetError(f"{gt}: rttm names queries missing from the tlist: {sorted(unknown)[:5]}")
    doc_keys = {d.key for d in documents}
    occ = {q.key: [o for o in occurrences.get(q.key, []) if o.document in doc_keys] for q in queries}
    queries.stats.update(
        {
            "split": split,
            "language": language,
            "queries": len(queries),
            "queries_without_hit": sum(1 for v in occ.values() if not v),
        }
    )
    documents.stats.update({"documents": len(documents)})
    return QbESplit(split, queries, documents, occ, {k: v for k, v in ecf.items() if k in doc_keys}, gt)
