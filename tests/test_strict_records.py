"""scripts/strict_records.py: records written with bare NaN tokens become strict JSON, nothing else changes."""

from __future__ import annotations

import json

from script_module import load_script


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"non-strict token {token}")

    return json.loads(text, parse_constant=refuse)


def test_old_records_are_rewritten_strict_and_strict_ones_left_alone(tmp_path):
    mod = load_script("scripts/strict_records.py")
    (tmp_path / "records" / "esc50").mkdir(parents=True)
    old = tmp_path / "records" / "esc50" / "a.json"
    old.write_text('{"upstream": "m2d", "score": 30.5, "secondary": {"per_class_accuracy": {"dog": NaN, "cat": 50.0}}}')
    good = tmp_path / "records" / "esc50" / "b.json"
    good.write_text('{"upstream": "fbank", "score": 20.0}')
    before = good.stat().st_mtime_ns
    assert mod.strictify(tmp_path) == [old]
    rec = _strict(old.read_text())
    assert rec["secondary"]["per_class_accuracy"] == {"dog": None, "cat": 50.0} and rec["score"] == 30.5
    assert rec["non_finite_as_null"] == ["secondary.per_class_accuracy.dog"]
    assert good.stat().st_mtime_ns == before and mod.strictify(tmp_path) == []
