"""scripts/recipe_study.py renders its table from the runs and records it finds: the paired test is the
textbook one, the cells are validation / test, and SCORE's collapse check is read from the run's own log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_module import load_script


@pytest.fixture()
def study(tmp_path, monkeypatch):
    mod = load_script("scripts/recipe_study.py")
    monkeypatch.chdir(tmp_path)  # OUT and RUNS are relative: the study lives under tmp_path
    return mod


def _record(mod, tag: str, task: str, val: float, units: list[tuple[int, str, float]]) -> None:
    path = mod.OUT / "records" / tag / "records" / task / f"m2d__linear__{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    score = sum(u[2] for u in units) / len(units)
    path.write_text(json.dumps({"score": score, "secondary": {
        "val_score": val, "units": [{"seed": s, "fold": f, "score": x} for s, f, x in units]}}))


def _run(mod, name: str, lines: list[dict], steps: int = 1000) -> Path:
    d = mod.RUNS / name
    d.mkdir(parents=True)
    (d / "done").write_text("ok\n")
    (d / "config.yaml").write_text(f"train:\n  steps: {steps}\n")
    (d / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


def test_paired_difference_matches_a_hand_computed_t_test(study):
    a = {(0, 0, "f1"): 40.0, (0, 1, "f1"): 42.0, (0, 2, "f1"): 47.0}
    b = {(0, 0, "f1"): 38.0, (0, 1, "f1"): 41.0, (0, 2, "f1"): 42.0}
    # differences 2, 1, 5: mean 8/3, sd sqrt(13/3), t = (8/3) / (sd / sqrt 3) = 2.219 with 2 df: p = 0.157
    assert study._paired(a, b) == "+2.7 [-2.5, +7.8], p=0.16, n=3"
    assert study._paired({(0, 0, "f1"): 1.0}, {(0, 0, "f1"): 0.0}) == "—"  # one unit: no test


def test_render_shows_validation_and_test_and_the_paired_row(study):
    probe = {"step": 1000, "wall_s": 600.0, "probe/loss": 0.3, "probe/floor_constant": 1.9, "probe/floor_position": 0.4,
             "probe/floor_neighbour": 0.8, "probe/rankme_online": 29.5, "probe/knn_esc50": 0.52,
             "probe/knn_esc50_step0": 0.43}
    _run(study, "clipnorm_mix", [{"step": 10, "wall_s": 5.0}, probe])
    _record(study, "clipnorm_mix", "esc50", 46.9, [(0, "fold1", 40.0), (1, "fold1", 42.0), (2, "fold1", 47.0)])
    _record(study, "twin-16x16", "esc50", 41.7, [(0, "fold1", 38.0), (1, "fold1", 41.0), (2, "fold1", 42.0)])
    text = study.render().read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| clipnorm_mix |"))
    assert "| 1000 | 10 min | 46.9 / 43.0 | — | — |" in row  # steps, wall from the log, esc50 val / test, no others
    assert "loss 0.300 vs lowest floor 0.400; RankMe 29.5; kNN esc50 0.52 (step 0 0.43)" in row
    assert "| twin-16x16 | step 0 of the 16x16 runs, seed 0 | 0 | — | 41.7 / 40.3 |" in text
    assert "| clipnorm_mix | 0 | +2.7 [-2.5, +7.8], p=0.16, n=3 | — | — |" in text


def test_score_probe_reads_the_collapse_check_from_the_log(study):
    d = _run(study, "score-long", [
        {"step": 0, "probe/wchange_blocks": 0.0, "probe/cos_between_proj": 0.8228, "probe/cos_between_proj_teacher": 0.8228},
        {"step": 1000, "wall_s": 375.3, "probe/wchange_blocks": 0.0526, "probe/cos_between_proj": 0.8391,
         "probe/cos_between_proj_teacher": 0.8228}])
    assert study._score_probe(d) == ("Training took 375 s; the tuned blocks moved 5.3 % and the between-utterance "
                                     "cosine of the projected frames went 0.823 -> 0.839 (the teacher's: 0.823).")
    assert study._score_probe(d.parent / "missing") == ""
