"""The `stdlist.xml` detection file that QUESST's official scorer (`score-TWV-Cnxe.sh`) reads.

Format: NIST's 2006 Spoken Term Detection system output, which QUESST 2014 keeps (its scoring
README: "a .stdlist.xml file with the format described in the NIST 2006 STD Evaluation Plan"),
with one `<term>` per (query, document) trial because QUESST detection is document-level:

    <stdlist termlist_filename=... indexing_time=... language=... index_size=... system_id=...>
      <detected_termlist termid=QUERY term_search_time=... oov_term_count=...>
        <term file=DOC channel="1" tbeg="0.000" dur="0.00" score=S decision="YES|NO"/>

The attribute values are those s3prl 0.4.18's `quesst14_dtw` writes (scores with 4 decimals,
YES when the z-score exceeds 2.0), so a file from here scores exactly like s3prl's with
`./score-TWV-Cnxe.sh <dir> groundtruth_quesst14_<split> -10` (the scorer reads every
`*.stdlist.xml` in `<dir>`; -10 is the score it assumes for trials the file leaves out).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from upstreams.fileio import atomic_write_bytes

from ..metrics.twv import file_id
from .dtw import DECISION_THRESHOLD

__all__ = ["STDLIST_NAME", "Detection", "write_stdlist", "read_stdlist"]

STDLIST_NAME = "benchmark.stdlist.xml"  # the name s3prl uses; the scorer globs *.stdlist.xml


@dataclass(frozen=True)
class Detection:
    score: float
    decision: bool  # the system's YES/NO (used for ATWV)


def write_stdlist(
    path: str | os.PathLike,
    query_names: Sequence[str],
    doc_names: Sequence[str],
    scores: torch.Tensor,
    decisions: torch.Tensor | None = None,
    *,
    threshold: float = DECISION_THRESHOLD,
    system_id: str = "benchmark",
    language: str = "english",
    precision: int = 4,
) -> Path:
    """Write every (query, document) trial; `path` may be a directory (then `benchmark.stdlist.xml`).

    Args:
        query_names, doc_names: term ids and file ids as the groundtruth spells them.
        scores: `(Q, D)` detection scores (higher = more likely present).
        decisions: `(Q, D)` bool YES/NO; default `scores > threshold` (s3prl's rule).
        precision: decimals written for scores (s3prl writes 4).
    Returns:
        the file written (atomically).
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if scores.shape != (len(query_names), len(doc_names)):
        raise ValueError(
            f"scores must be (queries, documents) = ({len(query_names)}, {len(doc_names)}); got {tuple(scores.shape)}"
        )
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contain NaN or inf; the scorer cannot read them")
    if decisions is None:
        decisions = scores > threshold
    decisions = torch.as_tensor(decisions, dtype=torch.bool)
    if decisions.shape != scores.shape:
        raise ValueError(f"decisions must have the shape of scores {tuple(scores.shape)}; got {tuple(decisions.shape)}")
    path = Path(path)
    if path.is_dir():
        path = path / STDLIST_NAME
    if not path.name.endswith(".stdlist.xml"):
        raise ValueError(f"the QUESST scorer only reads files named *.stdlist.xml; got {path.name}")

    root = ET.Element(
        "stdlist",
        termlist_filename=STDLIST_NAME,
        indexing_time="1.00",
        language=language,
        index_size="1",
        system_id=system_id,
    )
    fmt = f"{{:.{precision}f}}"
    s, dec = scores.tolist(), decisions.tolist()
    for qi, query in enumerate(query_names):
        terms = ET.SubElement(
            root, "detected_termlist", termid=str(query), term_search_time="1.0", oov_term_count="1"
        )
        for di, doc in enumerate(doc_names):
            ET.SubElement(
                terms,
                "term",
                file=str(doc),
                channel="1",
                tbeg="0.000",
                dur="0.00",
                score=fmt.format(s[qi][di]),
                decision="YES" if dec[qi][di] else "NO",
            )
    ET.indent(root)
    data = ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"
    return atomic_write_bytes(path, data)


def read_stdlist(path: str | os.PathLike) -> dict[tuple[str, str], Detection]:
    """Parse a stdlist file into `{(termid, file_id): Detection}`.

    File names are reduced with `tasks.metrics.twv.file_id` (no directory, no audio extension),
    the convention the groundtruth readers use. Several detections of one query in one file
    (NIST STD allows time-located hits) collapse to the document-level trial QUESST scores: the
    highest score, and YES if any of them says YES.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.stdlist.xml"))
        if len(found) != 1:
            raise FileNotFoundError(f"expected exactly one *.stdlist.xml in {path}; found {len(found)}")
        path = found[0]
    root = ET.parse(path).getroot()
    if root.tag != "stdlist":
        raise ValueError(f"{path}: root element is <{root.tag}>, expected <stdlist>")
    out: dict[tuple[str, str], Detection] = {}
    for terms in root.iter("detected_termlist"):
        termid = terms.get("termid")
        if not termid:
            raise ValueError(f"{path}: <detected_termlist> without termid")
        for term in terms.iter("term"):
            try:
                key = (termid, file_id(term.attrib["file"]))
                score = float(term.attrib["score"])
                decision = term.attrib["decision"].strip().upper()
            except KeyError as err:
                raise ValueError(f"{path}: <term> of {termid} lacks attribute {err}") from None
            if decision not in ("YES", "NO") or math.isnan(score):
                raise ValueError(f"{path}: bad score/decision {score!r}/{decision!r} for {key}")
            det = Detection(score, decision == "YES")
            if key in out:
                det = Detection(max(det.score, out[key].score), det.decision or out[key].decision)
            out[key] = det
    return out
