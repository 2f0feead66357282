"""Term-weighted value (ATWV, MTWV) of document-level query-by-example detections, QUESST-style.

Definition (NIST 2006 STD evaluation plan, which MediaEval SWS 2011-13 and QUESST 2014 adopt):

    TWV(theta) = 1 - mean_q [ Pmiss(q, theta) + beta * Pfa(q, theta) ]
    Pmiss(q) = 1 - N_correct(q) / N_true(q)        Pfa(q) = N_fa(q) / N_nontarget(q)
    beta = (C_fa / C_miss) * (1 / P_target - 1)

The mean runs over the queries that occur at least once in the groundtruth (NIST excludes terms
without true occurrences; QUESST's scorer prints "Removing unseen models"). NIST STD counts one
non-target trial per second of speech; QUESST 2014 only asks *which files* contain the query
(its task page: "only the appropriate audio files containing the query must be found (no need to
locate the query within the file)"; the README of the MediaEval QUESST scoring kit shows its jar
reporting "Scores: 5327190 (495 model x 10762 test)", i.e. queries x files), so a trial is a
(query, file) pair and N_nontarget(q) = number of files - N_true(q). The same README says trials
missing from a system's stdlist get the default score given as the scorer's third argument.

MTWV is the maximum over one global threshold (all trials with score >= theta are YES; theta
above every score gives TWV = 0, so MTWV >= 0). ATWV uses the system's own YES/NO decisions.

Cost parameters:
- `QUESST2014`: P_target = 0.0008, C_miss = 100, C_fa = 1, beta = 12.49. These are the values
  given for SWS/QUESST by the task organisers (Anguera et al., "Query by Example Search on Speech
  at Mediaeval 2014", MediaEval 2014 Working Notes, CEUR-WS Vol-1263) and used by public QbE
  scorers of QUESST-style query x document trials (defaults C_miss=100, C_fa=1,
  P_target=0.0008). The passage of the overview could not be read from the offline copies
  available when this was written: before publishing numbers, check them once against the
  official scorer with a file from `tasks.qbe.stdlist.write_stdlist`.
- `NIST_STD2006`: P_target = 1e-4, C_miss = 1 (value of a correct detection), C_fa = 0.1,
  beta = 999.9 (NIST STD 2006 evaluation plan; Kaldi's `TwvMetricsOptions` uses the same).

Groundtruth files (a QUESST `scoring/groundtruth_quesst14_<split>/` directory): `*.ecf.xml`
lists the searched files (`<excerpt audio_filename=...>`), `*.tlist.xml` the queries
(`<term termid=...>`), `*.rttm` the occurrences as `LEXEME <file> <chnl> <tbeg> <dur> <termid>
...` lines (RTTM fields: type file chnl tbeg tdur ortho stype name conf; `NO_KEYWORD` marks
none). File names are compared without directory and audio extension (`file_id`).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "CostParams",
    "QUESST2014",
    "NIST_STD2006",
    "GroundTruth",
    "TWVResult",
    "file_id",
    "read_ecf",
    "read_tlist",
    "read_rttm",
    "load_groundtruth",
    "twv",
    "score_matrix",
    "score_detections",
]

_AUDIO_EXTENSIONS = (".wav", ".flac", ".sph", ".mp3", ".ogg", ".raw")
_NO_TERM = ("NO_KEYWORD", "<NA>", "")


@dataclass(frozen=True)
class CostParams:
    p_target: float
    c_miss: float
    c_fa: float

    @property
    def beta(self) -> float:
        return (self.c_fa / self.c_miss) * (1.0 / self.p_target - 1.0)


QUESST2014 = CostParams(p_target=0.0008, c_miss=100.0, c_fa=1.0)  # beta = 12.49
NIST_STD2006 = CostParams(p_target=1e-4, c_miss=1.0, c_fa=0.1)  # beta = 999.9


def file_id(name: str) -> str:
    """`'Audio/quesst14_00001.wav'` -> `'quesst14_00001'`: how files are matched across files."""
    base = Path(name.strip()).name
    if base.lower().endswith(_AUDIO_EXTENSIONS):
        base = base[: base.rfind(".")]
    return base


@dataclass(frozen=True)
class GroundTruth:
    """The trial grid (queries x documents) and which trials are targets."""

    queries: tuple[str, ...]
    documents: tuple[str, ...]
    targets: frozenset[tuple[str, str]]  # (termid, file_id)

    def restrict(self, queries: Iterable[str] | None = None, documents: Iterable[str] | None = None) -> "GroundTruth":
        """The same groundtruth on a subset (e.g. the English queries and files s3prl uses)."""
        q = self.queries
        if queries is not None:
            wanted = set(queries)
            q = tuple(x for x in q if x in wanted)
        d = self.documents
        if documents is not None:
            wanted = {file_id(y) for y in documents}
            d = tuple(x for x in d if x in wanted)
        qs, ds = set(q), set(d)
        return GroundTruth(q, d, frozenset(t for t in self.targets if t[0] in qs and t[1] in ds))

    def target_matrix(self, query_names: Sequence[str], doc_names: Sequence[str]) -> torch.Tensor:
        """`(Q, D)` bool: does query i occur in document j."""
        qpos = {q: i for i, q in enumerate(query_names)}
        dpos = {file_id(d): j for j, d in enumerate(doc_names)}
        out = torch.zeros(len(query_names), len(doc_names), dtype=torch.bool)
        hits = [(qpos[q], dpos[d]) for q, d in self.targets if q in qpos and d in dpos]
        if hits:
            rows, cols = zip(*hits)
            out[list(rows), list(cols)] = True
        return out


@dataclass(frozen=True)
class TWVResult:
    mtwv: float
    threshold: float  # trials with score >= threshold are YES at the MTWV point (inf: none)
    p_miss: float  # at the MTWV threshold, averaged over the scored queries
    p_fa: float
    atwv: float | None  # None when no decisions were given
    beta: float
    n_queries: int  # queries with at least one target: the ones TWV averages over
    n_documents: int


def read_ecf(path: str | os.PathLike) -> list[str]:
    """File ids of the `<excerpt audio_filename=...>` entries, in order, without repeats."""
    root = _xml_root(path, "ecf")
    out = [file_id(e.attrib["audio_filename"]) for e in root.iter("excerpt") if "audio_filename" in e.attrib]
    if not out:
        raise ValueError(f"{path}: no <excerpt audio_filename=...> entries")
    return list(dict.fromkeys(out))


def read_tlist(path: str | os.PathLike) -> list[str]:
    """Term ids of the `<term termid=...>` entries, in order, without repeats."""
    root = _xml_root(path, "termlist")
    out = [t.attrib["termid"] for t in root.iter("term") if "termid" in t.attrib]
    if not out:
        raise ValueError(f"{path}: no <term termid=...> entries")
    return list(dict.fromkeys(out))


def read_rttm(path: str | os.PathLike) -> set[tuple[str, str]]:
    """`(termid, file_id)` pairs from the LEXEME lines (several occurrences in a file count once)."""
    out: set[tuple[str, str]] = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith(";;") or fields[0] != "LEXEME":
                continue
            if len(fields) < 6:
                raise ValueError(f"{path}:{lineno}: LEXEME line needs at least 6 fields: {line.strip()!r}")
            if fields[5] not in _NO_TERM:
                out.add((fields[5], file_id(fields[1])))
    return out


def load_groundtruth(directory: str | os.PathLike) -> GroundTruth:
    """Read a QUESST groundtruth directory (one `*.ecf.xml`, one `*.tlist.xml`, one `*.rttm`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"groundtruth directory {directory} does not exist")

    def one(pattern: str) -> Path:
        found = sorted(directory.glob(pattern))
        if len(found) != 1:
            raise FileNotFoundError(f"expected exactly one {pattern} in {directory}; found {[p.name for p in found]}")
        return found[0]

    docs = read_ecf(one("*.ecf.xml"))
    queries = read_tlist(one("*.tlist.xml"))
    qs, ds = set(queries), set(docs)
    targets = frozenset(t for t in read_rttm(one("*.rttm")) if t[0] in qs and t[1] in ds)
    return GroundTruth(tuple(queries), tuple(docs), targets)


def twv(
    scores: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    decisions: torch.Tensor | np.ndarray | None = None,
    *,
    costs: CostParams = QUESST2014,
) -> TWVResult:
    """MTWV (and ATWV from `decisions`) over a full trial grid.

    Args:
        scores: `(Q, D)` detection scores, higher = more likely.
        targets: `(Q, D)` bool groundtruth; rows without any target are left out (NIST).
        decisions: `(Q, D)` bool YES/NO for ATWV, or None.
        costs: the cost model giving beta.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets, dtype=bool)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"scores and targets must be (queries, documents) of one shape; got {s.shape} and {t.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    beta = costs.beta
    n_true = t.sum(1)
    keep = n_true > 0
    if not keep.any():
        raise ValueError("no query has a target in the groundtruth: TWV is undefined")
    s, t, n_true = s[keep], t[keep], n_true[keep]
    n_q, n_docs = s.shape
    n_non = n_docs - n_true
    # Each trial moves TWV by a fixed amount when it turns YES: +1/(Q n_true) for a hit,
    # -beta/(Q n_non) for a false alarm. Sorting all trials by score and accumulating gives
    # TWV at every threshold; ties only count at the end of their group.
    hit_w = 1.0 / (n_q * n_true)
    fa_w = np.where(n_non > 0, -beta / (n_q * np.maximum(n_non, 1)), 0.0)
    weights = np.where(t, hit_w[:, None], fa_w[:, None]).ravel()
    flat = s.ravel()
    order = np.argsort(-flat, kind="stable")
    sorted_scores = flat[order]
    value = np.cumsum(weights[order])
    group_end = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    value, cut = value[group_end], sorted_scores[group_end]
    best = int(np.argmax(value))
    if value[best] > 0:
        mtwv, threshold = float(value[best]), float(cut[best])
    else:
        mtwv, threshold = 0.0, float("inf")
    p_miss, p_fa = _rates(s >= threshold, t, n_true, n_non)
    atwv = None
    if decisions is not None:
        dec = np.asarray(decisions, dtype=bool)
        if dec.shape != (keep.size, n_docs):
            raise ValueError(f"decisions must be {(keep.size, n_docs)}; got {dec.shape}")
        pm, pf = _rates(dec[keep], t, n_true, n_non)
        atwv = 1.0 - (pm + beta * pf)
    return TWVResult(mtwv, threshold, p_miss, p_fa, atwv, beta, int(n_q), int(n_docs))


def score_matrix(
    groundtruth: GroundTruth,
    query_names: Sequence[str],
    doc_names: Sequence[str],
    scores: torch.Tensor | np.ndarray,
    decisions: torch.Tensor | np.ndarray | None = None,
    *,
    default_score: float | None = None,
    costs: CostParams = QUESST2014,
) -> TWVResult:
    """Score a `(Q, D)` score matrix on the groundtruth's full trial grid, as the official scorer.

    Trials of the groundtruth that the matrix lacks get `default_score` and decision NO (the
    scorer's optional third argument; s3prl's recipe passes -10 because it only scores the
    English subset); without a default they are an error. Names outside the groundtruth are
    ignored. To score on a subset instead, pass `groundtruth.restrict(...)`.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (len(query_names), len(doc_names)):
        raise ValueError(f"scores must be ({len(query_names)}, {len(doc_names)}); got {s.shape}")
    dec = None if decisions is None else np.asarray(decisions, dtype=bool)
    qpos = {q: i for i, q in enumerate(query_names)}
    dpos = {file_id(d): j for j, d in enumerate(doc_names)}
    rows = np.array([qpos.get(q, -1) for q in groundtruth.queries])
    cols = np.array([dpos.get(d, -1) for d in groundtruth.documents])
    missing = int((rows < 0).sum() * len(cols) + (rows >= 0).sum() * (cols < 0).sum())
    if missing and default_score is None:
        raise ValueError(
            f"{missing} groundtruth trials have no score ({int((rows < 0).sum())} queries, "
            f"{int((cols < 0).sum())} documents absent); pass default_score (the official scorer's "
            "third argument, -10 in s3prl's recipe) or restrict the groundtruth"
        )
    full = np.full((len(rows), len(cols)), default_score if default_score is not None else 0.0)
    full_dec = np.zeros(full.shape, dtype=bool)
    valid = (rows[:, None] >= 0) & (cols[None, :] >= 0)
    ri, ci = np.nonzero(valid)
    full[ri, ci] = s[rows[ri], cols[ci]]
    if dec is not None:
        full_dec[ri, ci] = dec[rows[ri], cols[ci]]
    targets = groundtruth.target_matrix(groundtruth.queries, groundtruth.documents).numpy()
    return twv(full, targets, full_dec if dec is not None else None, costs=costs)


def score_detections(
    groundtruth: GroundTruth,
    detections: Mapping[tuple[str, str], object],
    *,
    default_score: float | None = None,
    costs: CostParams = QUESST2014,
) -> TWVResult:
    """Score `{(termid, file_id): Detection}` (from `tasks.qbe.stdlist.read_stdlist`)."""
    queries = sorted({q for q, _ in detections})
    docs = sorted({d for _, d in detections})
    qpos = {q: i for i, q in enumerate(queries)}
    dpos = {d: j for j, d in enumerate(docs)}
    s = np.full((len(queries), len(docs)), np.nan)
    dec = np.zeros(s.shape, dtype=bool)
    for (q, d), det in detections.items():
        s[qpos[q], dpos[d]] = det.score
        dec[qpos[q], dpos[d]] = det.decision
    if np.isnan(s).any():
        if default_score is None:
            raise ValueError("the detections do not cover every query x file pair; pass default_score")
        s[np.isnan(s)] = default_score
    return score_matrix(groundtruth, queries, docs, s, dec, default_score=default_score, costs=costs)


def _rates(det: np.ndarray, t: np.ndarray, n_true: np.ndarray, n_non: np.ndarray) -> tuple[float, float]:
    """Mean Pmiss and mean Pfa over queries for a YES/NO grid."""
    p_miss = 1.0 - (det & t).sum(1) / n_true
    p_fa = np.where(n_non > 0, (det & ~t).sum(1) / np.maximum(n_non, 1), 0.0)
    return float(p_miss.mean()), float(p_fa.mean())


def _xml_root(path: str | os.PathLike, tag: str) -> ET.Element:
    root = ET.parse(path).getroot()
    if root.tag != tag:
        raise ValueError(f"{path}: root element is <{root.tag}>, expected <{tag}>")
    return root
