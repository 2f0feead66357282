"""`--max-epochs / --max-steps / --patience`: they reach the head's training, are recorded, and bad values or
flags that do not fit the task are one line."""

from __future__ import annotations


import pytest

from bench.cli import main
from bench.run import RunRequest, run
from tiny_requests import tiny_request


def _req(tiny_root, tmp_path, **kw) -> RunRequest:
    return tiny_request(tiny_root, tmp_path, **{"upstream": "fbank", "upstream_options": {}, **kw})


def test_clip_epochs_and_patience_cap_training_and_are_recorded(tiny_root, tmp_path):
    rec, _ = run(_req(tiny_root, tmp_path, task="icbhi", protocol="linear", lrs=[1e-3],
                      budget={"max_epochs": 2, "patience": 1}))
    assert rec.details["budget"]["max_epochs"] == 2 and rec.details["budget"]["patience"] == 1
    assert rec.details["budget"]["set_by_user"] == ["max_epochs", "patience"]
    assert all(f["epochs_run"] <= 2 for f in rec.details["per_fold"])


def test_ctc_steps_cap_training_and_shrink_the_evaluation_interval(tiny_root, tmp_path):
    rec, _ = run(_req(tiny_root, tmp_path, task="pr", protocol="weighted", lrs=[1e-2], budget={"max_steps": 6}))
    budget = rec.details["budget"]
    assert budget["max_steps"] == 6 and budget["eval_every"] <= 6 and budget["min_steps"] <= 6
    assert budget["set_by_user"] == ["max_steps"]
    history = rec.details["runs"]["0.01"]["history"]
    assert history and max(h["step"] for h in history) <= 6


@pytest.mark.parametrize("args, message", [
    (["--task", "esc50", "--max-steps", "5"], "--max-steps does not apply to --task esc50"),
    (["--task", "pr", "--max-epochs", "5"], "--max-epochs does not apply to --task pr"),
    (["--task", "esc50", "--max-epochs", "0"], "--max-epochs 0: give a whole number >= 1"),
    (["--task", "qbe", "--patience", "3"], "qbe dtw trains nothing"),
])
def test_bad_budget_flags_are_one_line(args, message, capsys, tmp_path):
    code = main(["run", "--upstream", "fbank", "--profile", "tiny", "--results", str(tmp_path), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
