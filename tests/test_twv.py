"""ATWV/MTWV on hand-computed cases, QUESST groundtruth parsing, and the stdlist round trip."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from tasks.metrics.twv import (
    NIST_STD2006,
    QUESST2014,
    CostParams,
    GroundTruth,
    file_id,
    load_groundtruth,
    score_detections,
    score_matrix,
    twv,
)
from tasks.qbe.stdlist import read_stdlist, write_stdlist

BETA2 = CostParams(p_target=1 / 3, c_miss=1.0, c_fa=1.0)  # beta = (1/1) * (3 - 1) = 2

# Hand case: documents d1..d4; q1 occurs in d1; q2 in d2 and d3; q3 nowhere (left out).
TARGETS = np.array(
    [
        [1, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
    ],
    dtype=bool,
)
SCORES = np.array(
    [
        [0.9, 0.5, 0.1, 0.7],
        [0.8, 0.6, 0.4, 0.2],
        [1.0, 1.0, 1.0, 1.0],  # must not matter: q3 has no target
    ]
)


def test_costs():
    assert QUESST2014.beta == pytest.approx(12.49)  # (1 / 100) * (1 / 0.0008 - 1)
    assert NIST_STD2006.beta == pytest.approx(999.9)  # (0.1 / 1) * (1 / 1e-4 - 1)
    assert BETA2.beta == pytest.approx(2.0)


def test_mtwv_by_hand():
    # Two scored queries (q3 has no target), beta = 2. Turning a trial to YES moves TWV by
    #   q1 hit d1: +1/(2*1) = +1/2       q1 false alarms (3 non-targets): -2/(2*3) = -1/3 each
    #   q2 hits d2, d3: +1/(2*2) = +1/4  q2 false alarms (2 non-targets): -2/(2*2) = -1/2 each
    # Trials by decreasing score and TWV with everything >= that score as YES:
    #   0.9 q1d1 hit  +1/2 -> 1/2        0.5 q1d2 fa  -1/3 -> -5/12
    #   0.8 q2d1 fa   -1/2 -> 0          0.4 q2d3 hit +1/4 -> -1/6
    #   0.7 q1d4 fa   -1/3 -> -1/3       0.2 q2d4 fa  -1/2 -> -2/3
    #   0.6 q2d2 hit  +1/4 -> -1/12      0.1 q1d3 fa  -1/3 -> -1
    # MTWV = 1/2 at threshold 0.9. Check at 0.9 directly: q1 Pmiss 0, Pfa 0; q2 Pmiss 1, Pfa 0:
    # TWV = 1 - ((0 + 2*0) + (1 + 2*0)) / 2 = 1/2; mean Pmiss = 1/2, mean Pfa = 0.
    r = twv(SCORES, TARGETS, costs=BETA2)
    assert r.mtwv == pytest.approx(0.5)
    assert r.threshold == pytest.approx(0.9)
    assert (r.p_miss, r.p_fa) == (pytest.approx(0.5), pytest.approx(0.0))
    assert (r.n_queries, r.n_documents) == (2, 4)
    assert r.atwv is None


def test_atwv_by_hand():
    # YES for q1d1, q1d4, q2d2 (and everything of q3, which is not scored):
    # q1: Pmiss 0, Pfa 1/3 -> 0 + 2 * 1/3 = 2/3;  q2: Pmiss 1/2, Pfa 0 -> 1/2
    # ATWV = 1 - (2/3 + 1/2) / 2 = 1 - 7/12 = 5/12
    decisions = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    assert twv(SCORES, TARGETS, decisions, costs=BETA2).atwv == pytest.approx(5 / 12)


def test_ties_move_together():
    # q2d2 (hit, +1/4) tied with q1d1 at 0.9: the first cut takes both: 1/2 + 1/4 = 3/4
    # (direct: q1 perfect, q2 Pmiss 1/2 -> 1 - (0 + 1/2) / 2 = 3/4).
    s = SCORES.copy()
    s[1, 1] = 0.9
    assert twv(s, TARGETS, costs=BETA2).mtwv == pytest.approx(0.75)
    # Now also the false alarm q2d1 (-1/2) at 0.9: hits and false alarm cannot be separated,
    # the cut at 0.9 is worth 1/2 + 1/4 - 1/2 = 1/4 and every later cut is lower
    # (direct: q2 Pmiss 1/2, Pfa 1/2 -> 1 - (0 + 1/2 + 2 * 1/2) / 2 = 1/4).
    s[1, 0] = 0.9
    r = twv(s, TARGETS, costs=BETA2)
    assert r.mtwv == pytest.approx(0.25)
    assert r.threshold == pytest.approx(0.9)


def test_queries_without_targets_are_left_out():
    with_q3 = twv(SCORES, TARGETS, costs=BETA2)
    without = twv(SCORES[:2], TARGETS[:2], costs=BETA2)
    assert with_q3 == without
    with pytest.raises(ValueError, match="no query has a target"):
        twv(SCORES[2:], TARGETS[2:], costs=BETA2)


def test_mtwv_is_zero_when_every_cut_loses():
    s = np.array([[0.1, 0.9, 0.8], [0.2, 0.7, 0.95]])
    t = np.array([[1, 0, 0], [1, 0, 0]], dtype=bool)
    r = twv(s, t, costs=QUESST2014)
    assert r.mtwv == 0.0 and r.threshold == float("inf")
    assert (r.p_miss, r.p_fa) == (1.0, 0.0)


def test_perfect_system_scores_one():
    rng = np.random.default_rng(0)
    t = rng.random((5, 30)) < 0.1
    t[:, 0] = True
    r = twv(t.astype(float) + 0.01 * rng.random(t.shape), t, t, costs=QUESST2014)
    assert r.mtwv == pytest.approx(1.0) and r.atwv == pytest.approx(1.0)


# --------------------------------------------------------------------------- groundtruth files


def write_groundtruth(directory, queries, docs, occurrences):
    """QUESST-2014-shaped groundtruth: ecf (excerpts with paths and .wav), tlist, rttm."""
    directory.mkdir(parents=True, exist_ok=True)
    ecf = ET.Element("ecf", source_signal_duration="100.0", version="20140515")
    for d in docs:
        ET.SubElement(ecf, "excerpt", audio_filename=f"Audio/{d}.wav", channel="1", tbeg="0.000",
                      dur="5.000", source_type="splitcts")
    ET.ElementTree(ecf).write(directory / "quesst14.ecf.xml", encoding="UTF-8", xml_declaration=True)
    tl = ET.Element("termlist", ecf_filename="quesst14.ecf.xml", language="multiple", encoding="UTF-8",
                    version="20140515")
    for q in queries:
        term = ET.SubElement(tl, "term", termid=q)
        ET.SubElement(term, "termtext").text = q
    ET.ElementTree(tl).write(directory / "quesst14_dev.tlist.xml", encoding="UTF-8", xml_declaration=True)
    lines = [";; quesst groundtruth"]
    for d in docs:
        lines.append(f"SPEAKER {d} 1 0.000 5.000 <NA> <NA> SELF <NA>")
    for q, d in occurrences:
        lines.append(f"LEXEME {d} 1 1.230 0.540 {q} lex SELF <NA>")
    lines.append(f"LEXEME {docs[0]} 1 0.000 5.000 NO_KEYWORD lex SELF <NA>")
    (directory / "quesst14_dev.rttm").write_text("\n".join(lines) + "\n")


def test_load_groundtruth(tmp_path):
    queries = ["quesst14_dev_0001", "quesst14_dev_0002", "quesst14_dev_0003"]
    docs = ["quesst14_00001", "quesst14_00002", "quesst14_00003", "quesst14_00004"]
    occ = [(queries[0], docs[0]), (queries[0], docs[0]), (queries[1], docs[1]), (queries[1], docs[2]),
           ("quesst14_dev_9999", docs[3])]  # repeated occurrence; a query outside the tlist
    write_groundtruth(tmp_path / "gt", queries, docs, occ)
    gt = load_groundtruth(tmp_path / "gt")
    assert gt.queries == tuple(queries) and gt.documents == tuple(docs)
    assert gt.targets == {(queries[0], docs[0]), (queries[1], docs[1]), (queries[1], docs[2])}
    np.testing.assert_array_equal(gt.target_matrix(queries, docs).numpy(), TARGETS)
    r = score_matrix(gt, queries, [f"{d}.wav" for d in docs], SCORES, costs=BETA2)
    assert r.mtwv == pytest.approx(0.5)


def test_load_groundtruth_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_groundtruth(tmp_path / "missing")
    (tmp_path / "gt").mkdir()
    with pytest.raises(FileNotFoundError, match=r"\*\.ecf\.xml"):
        load_groundtruth(tmp_path / "gt")


def test_file_id():
    assert file_id("Audio/quesst14_00001.wav") == "quesst14_00001"
    assert file_id("quesst14_dev_0001") == "quesst14_dev_0001"
    assert file_id(" x.v2.FLAC ") == "x.v2"


def test_missing_trials_use_the_default_score_like_the_official_scorer():
    gt = GroundTruth(
        queries=("q1", "q2", "q3", "q4"),
        documents=("d1", "d2", "d3", "d4", "d5"),
        targets=frozenset({("q1", "d1"), ("q2", "d2"), ("q2", "d3"), ("q4", "d5")}),
    )
    # we only score q1, q2 on d1..d4 (s3prl scores the English subset; the rest gets -10)
    with pytest.raises(ValueError, match="default_score"):
        score_matrix(gt, ["q1", "q2"], ["d1", "d2", "d3", "d4"], SCORES[:2], costs=BETA2)
    r = score_matrix(gt, ["q2", "q1"], ["d1", "d2", "d3", "d4"], SCORES[[1, 0]], default_score=-10.0, costs=BETA2)
    full = np.full((4, 5), -10.0)
    full[:2, :4] = SCORES[:2]
    assert r == twv(full, gt.target_matrix(gt.queries, gt.documents).numpy(), costs=BETA2)
    assert r.n_queries == 3  # q4 is scored (all -10) and counts, q3 has no target


# --------------------------------------------------------------------------- stdlist


def test_stdlist_round_trip(tmp_path):
    queries = ["quesst14_dev_0001", "quesst14_dev_0002", "quesst14_dev_0003"]
    docs = ["quesst14_00001", "quesst14_00002", "quesst14_00003", "quesst14_00004"]
    scores = torch.tensor(SCORES * 3 - 0.5)
    path = write_stdlist(tmp_path, queries, docs, scores, threshold=2.0, system_id="unit")
    assert path.name == "benchmark.stdlist.xml"
    root = ET.parse(path).getroot()
    assert root.tag == "stdlist" and root.get("system_id") == "unit"
    assert [t.get("termid") for t in root] == queries
    term = root[0][0]
    assert term.attrib == {"file": docs[0], "channel": "1", "tbeg": "0.000", "dur": "0.00", "score": "2.2000",
                           "decision": "YES"}
    back = read_stdlist(tmp_path)
    assert len(back) == 12
    for i, q in enumerate(queries):
        for j, d in enumerate(docs):
            assert back[q, d].score == pytest.approx(float(scores[i, j]), abs=5e-5)
            assert back[q, d].decision == bool(scores[i, j] > 2.0)
    lxml = pytest.importorskip("lxml.etree")
    assert lxml.parse(str(path)).getroot().tag == "stdlist"

    occurrences = [(queries[0], docs[0]), (queries[1], docs[1]), (queries[1], docs[2])]
    write_groundtruth(tmp_path / "gt", queries, docs, occurrences)
    gt = load_groundtruth(tmp_path / "gt")
    from_file = score_detections(gt, back, costs=BETA2)
    direct = score_matrix(gt, queries, docs, scores, scores > 2.0, costs=BETA2)
    assert from_file.mtwv == pytest.approx(direct.mtwv) and from_file.atwv == pytest.approx(direct.atwv)


def test_stdlist_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="queries, documents"):
        write_stdlist(tmp_path, ["q"], ["a", "b"], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        write_stdlist(tmp_path, ["q"], ["a"], torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match=r"\*\.stdlist\.xml"):
        write_stdlist(tmp_path / "out.xml", ["q"], ["a"], torch.zeros(1, 1))
