"""Bad input and hostile environments through the real CLI (`bench.cli.main`): every case ends in exit 2
and ONE stderr line naming the flag, value or file and what to do - never a traceback, never after the work
(unless the failure comes after it, and then the finished result is saved elsewhere and the line says where).
Records and leaderboard rows survive: strict JSON, no results dropped by the leaderboard's key.

Fast by construction: the tiny profile, the fbank upstream, `--folds fold1`, one embedding cache per module.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from bench.cli import main

RUN = ["run", "--upstream", "fbank", "--task", "esc50", "--protocol", "linear", "--folds", "fold1", "--profile", "tiny",
       "--no-progress"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


def _cli(capsys, *argv) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, [line for line in err.splitlines() if line.strip()]


def _run(capsys, tiny_root, results, cache, *extra):
    return _cli(capsys, *RUN, "--data-root", tiny_root, "--results", results, "--cache-root", cache, *extra)


def _one_line(rc: int, err: list[str], *needles: str) -> str:
    assert rc == 2, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


def _strict_load(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def _records(results: Path) -> list[Path]:
    return sorted((results / "records").glob("*/*.json"))


def _fake_m2d_checkpoint(path: Path, method: str = "m2d") -> Path:
    from upstreams.m2d.upstream import random_upstream

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**random_upstream("tiny").bundle(), "method": method, "step": 1}, path)
    return path


# -- 2: records are strict JSON ----------------------------------------------------------------------
def test_record_is_strict_json_with_per_class_means_over_folds_that_hold_the_class(capsys, tiny_root, tmp_path, cache):
    rc, out, err = _run(capsys, tiny_root, tmp_path / "res", cache, "--json")
    assert rc == 0, err
    (path,) = _records(tmp_path / "res")
    rec = _strict_load(path.read_text())  # bare NaN / Infinity would raise
    assert _strict_load(out) == rec  # --json prints the record as written
    per_class = rec["secondary"]["per_class_accuracy"]
    tested = set(rec["details"]["classes"])
    assert set(per_class) == tested
    # fold1's test split lacks some classes: those are null (in no evaluated fold), never NaN
    assert any(v is None for v in per_class.values()) and all(v is None or 0 <= v <= 100 for v in per_class.values())


def test_non_finite_numbers_become_null_with_a_note(tmp_path):
    from bench.results.records import ResultRecord, write_record
    from upstreams.fileio import atomic_write_json

    rec = ResultRecord("fbank", "esc50", "linear", "accuracy", 50.0,
                       secondary={"std": float("nan"), "per_class_accuracy": {"dog": float("inf"), "cow": 10.0}})
    path = write_record(rec, tmp_path)
    d = _strict_load(path.read_text())
    assert d["secondary"]["std"] is None and d["secondary"]["per_class_accuracy"] == {"dog": None, "cow": 10.0}
    assert d["non_finite_as_null"] == ["secondary.std", "secondary.per_class_accuracy.dog"]
    other = atomic_write_json(tmp_path / "x.json", {"a": [1.0, float("-inf")]})
    assert _strict_load(other.read_text()) == {"a": [1.0, None]}


# -- 3: unwritable or full output locations -------------------------------------------------------------
def test_unwritable_outputs_fail_before_any_work(capsys, tiny_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    fresh_cache = tmp_path / "cache"
    rc, _, err = _run(capsys, tiny_root, blocker, fresh_cache)
    _one_line(rc, err, "--results", str(blocker), "is a file")
    rc, _, err = _run(capsys, tiny_root, blocker / "sub", fresh_cache)
    _one_line(rc, err, "--results", str(blocker))
    rc, _, err = _run(capsys, tiny_root, tmp_path / "res", blocker / "cache")
    _one_line(rc, err, "--cache-root", str(blocker / "cache"))
    assert not fresh_cache.exists() and not (tmp_path / "res").exists()  # nothing was extracted or evaluated
    rc, _, err = _cli(capsys, "pretrain", "m2d", "--config", "tiny", "--out", blocker / "run")
    _one_line(rc, err, "--out", str(blocker / "run"), "writable --out")


def test_finished_record_is_saved_elsewhere_when_the_results_disk_is_full(capsys, tiny_root, tmp_path, cache,
                                                                         monkeypatch):
    import bench.results.records

    results = tmp_path / "res"
    real = bench.results.records.atomic_write_json

    def full_disk(dest, obj, indent=2):
        if str(dest).startswith(str(results)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))
        return real(dest, obj, indent)

    monkeypatch.setattr(bench.results.records, "atomic_write_json", full_disk)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    rc, _, err = _run(capsys, tiny_root, results, cache)
    line = _one_line(rc, err, "No space left on device", str(results / "records" / "esc50"))
    (saved,) = (tmp_path / "user-cache").rglob("*.json")
    assert str(saved) in line
    rec = _strict_load(saved.read_text())
    assert (rec["upstream"], rec["task"], rec["split"]) == ("fbank", "esc50", "test (fold1)")
    assert isinstance(rec["score"], float)


def test_a_full_disk_mid_run_is_one_line(capsys, tiny_root, tmp_path, cache, monkeypatch):
    import bench.cache
    import upstreams.training.run

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "cache" / "entry"))

    monkeypatch.setattr(bench.cache.EmbeddingCache, "get_or_create", full)
    rc, _, err = _run(capsys, tiny_root, tmp_path / "res", tmp_path / "cache")
    _one_line(rc, err, str(tmp_path / "cache" / "entry"), "No space left on device", "--cache-root")
    monkeypatch.setattr(upstreams.training.run, "train", full)
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("BENCH_DATA", str(tiny_root))
    rc, _, err = _cli(capsys, "pretrain", "m2d", "--config", "tiny")
    assert rc == 2 and "No space left on device" in err[-1] and "--resume --out" in err[-1]


def test_leaderboard_outputs_checked_before_reading(capsys, tmp_path):
    from bench.results.records import ResultRecord, write_record

    write_record(ResultRecord("fbank", "esc50", "linear", "accuracy", 50.0), tmp_path / "res")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc, _, err = _cli(capsys, "leaderboard", "--results", tmp_path / "res", "--csv", blocker / "board.csv")
    _one_line(rc, err, "--csv", str(blocker / "board.csv"))
    rc, _, err = _cli(capsys, "leaderboard", "--results", tmp_path / "res", "--plot", blocker / "board.png")
    _one_line(rc, err, "--plot")
    rc, _, err = _cli(capsys, "leaderboard", "--results", blocker)
    _one_line(rc, err, "--results", str(blocker))


# -- 4: the leaderboard keeps every configuration ------------------------------------------------------------
def _board(capsys, results: Path):
    import pandas as pd

    rc, out, err = _cli(capsys, "leaderboard", "--results", results)
    assert rc == 0, err
    return pd.read_csv(results / "leaderboard.csv"), out


def test_leaderboard_keeps_a_five_fold_and_a_one_fold_run(capsys, tiny_root, tmp_path, cache):
    every = [a for a in RUN if a not in ("--folds", "fold1")]
    rc, _, err = _cli(capsys, *every, "--data-root", tiny_root, "--results", tmp_path, "--cache-root", cache)
    assert rc == 0, err
    assert _run(capsys, tiny_root, tmp_path, cache)[0] == 0
    df, out = _board(capsys, tmp_path)
    assert sorted(df["folds"]) == ["fold1", "fold1 fold2 fold3 fold4 fold5"]
    assert "[folds fold1]" in out  # the printed table says which row is which


def test_leaderboard_keeps_both_speech_commands_label_sets(capsys, tiny_root, tmp_path, cache):
    base = ["run", "--upstream", "fbank", "--task", "speech_commands", "--profile", "tiny", "--no-progress",
            "--data-root", tiny_root, "--results", tmp_path, "--cache-root", cache]
    assert _cli(capsys, *base)[0] == 0
    assert _cli(capsys, *base, "--classes", "all35")[0] == 0
    df, out = _board(capsys, tmp_path)
    assert len(df) == 2
    assert sorted(json.loads(o)["classes"] for o in df["run_options"]) == [12, 35]


def test_leaderboard_keeps_two_layers_and_a_user_lr_grid(capsys, tiny_root, tmp_path, cache):
    base = ["run", "--upstream", "random", "-o", "arch=tiny", "--task", "esc50", "--folds", "fold1", "--profile",
            "tiny", "--no-progress", "--data-root", tiny_root, "--results", tmp_path, "--cache-root", cache]
    for extra in (["--layer", "1"], ["--layer", "2"], ["--layer", "2", "--lr", "0.01"], ["--layer", "-1"]):
        assert _cli(capsys, *base, *extra)[0] == 0
    df, _ = _board(capsys, tmp_path)
    opts = [json.loads(o) for o in df["run_options"]]
    # layer -1 of the 3-layer tiny ViT is layer 2 with the default grid: it replaces that row
    assert sorted((o["layer"], tuple(o["lr_grid"])) for o in opts) == [
        (1, (1e-4, 1e-3, 1e-2)), (2, (1e-4, 1e-3, 1e-2)), (2, (1e-2,))]


def test_leaderboard_skips_a_bad_record_with_one_warning(capsys, tmp_path):
    from bench.results.records import ResultRecord, write_record

    good = write_record(ResultRecord("fbank", "esc50", "linear", "accuracy", 50.0), tmp_path)
    bad = good.with_name("broken.json")
    bad.write_text(json.dumps({**json.loads(good.read_text()), "upstream": "other", "score": "abc"}))
    rc, out, err = _cli(capsys, "leaderboard", "--results", tmp_path)
    assert rc == 0, err
    assert len(err) == 1 and "broken.json" in err[0] and "'abc'" in err[0] and err[0].startswith("warning:")
    assert "fbank" in out and "other" not in out


# -- 5, 6: one line, exit 2, before the work ---------------------------------------------------------------
@pytest.mark.parametrize("extra, needles", [
    (["--lr", "nan"], ["--lr nan", "finite"]),
    (["--lr", "inf"], ["--lr inf", "finite"]),
    (["--lr", "0.01", "-1"], ["--lr -1", "> 0"]),
    (["--layer", "99"], ["--layer 99", "1 layer", "-1..0"]),
    (["--device", "nosuch"], ["--device nosuch", "cpu"]),
    (["--batch-seconds", "0"], ["--batch-seconds 0", "> 0"]),
    (["--batch-seconds", "nan"], ["--batch-seconds nan"]),
    (["--upstream-lr-scale", "-1"], ["--upstream-lr-scale -1", "> 0"]),
    (["--upstream-lr-scale", "inf"], ["--upstream-lr-scale inf"]),
    (["--upstream", "os.path:join"], ["--upstream os.path:join", "not an upstream factory"]),
    (["-o", "arch"], ["-o/--option arch", "KEY=VALUE"]),
    (["--classes", "all35"], ["--classes all35", "speech_commands"]),
])
def test_bad_run_values_are_one_line(capsys, tiny_root, tmp_path, extra, needles):
    rc, _, err = _run(capsys, tiny_root, tmp_path / "res", tmp_path / "cache", *extra)
    _one_line(rc, err, *needles)
    assert not _records(tmp_path / "res")
    assert not list((tmp_path / "cache").rglob("meta.json"))  # failed before any extraction (--layer 99 too)


@pytest.mark.parametrize("assignments, needles", [
    (["train.lr=.nan"], ["train.lr", "finite"]),
    (["train.lr=-1"], ["train.lr", ">= 0"]),
    (["train.lr=0", "train.base_lr=.nan"], ["train.base_lr", "finite"]),
    (["train.lr=0", "train.base_lr=0"], ["train.lr and train.base_lr are both 0"]),
    (["train.min_lr=inf"], ["train.min_lr", "finite"]),
    (["train.warmup_steps=50"], ["train.warmup_steps 50", "30 steps"]),
])
def test_bad_pretrain_values_are_one_line_and_leave_no_run_folder(capsys, tmp_path, monkeypatch, tiny_root,
                                                                  assignments, needles):
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("BENCH_DATA", str(tiny_root))
    rc, _, err = _cli(capsys, "pretrain", "m2d", "--config", "tiny", *[a for s in assignments for a in ("--set", s)])
    _one_line(rc, err, *needles)
    assert not (tmp_path / "runs").exists()


def test_set_reads_an_exponent_as_a_float(capsys):
    rc, out, err = _cli(capsys, "pretrain", "m2d", "--config", "tiny", "--set", "train.lr=1e-4", "--print-config")
    assert rc == 0, err
    import yaml

    assert yaml.safe_load(out)["train"]["lr"] == pytest.approx(1e-4)


# -- 10: a checkpoint of another method ---------------------------------------------------------------------
def test_m2dx_refuses_an_m2d_checkpoint_unless_told(capsys, tiny_root, tmp_path):
    import upstreams

    ckpt = _fake_m2d_checkpoint(tmp_path / "m2d.pt")
    rc, _, err = _cli(capsys, "run", "--upstream", "m2dx", "--ckpt", ckpt, "--task", "esc50", "--profile", "tiny",
                      "--folds", "fold1", "--data-root", tiny_root, "--results", tmp_path / "res",
                      "--cache-root", tmp_path / "cache")
    _one_line(rc, err, str(ckpt), "'m2d' run, not 'm2dx'", "--upstream m2d", "any_method=True")
    assert upstreams.load("m2dx", ckpt=ckpt, any_method=True).num_layers == upstreams.load("m2d", ckpt=ckpt).num_layers
    with pytest.raises(upstreams.UpstreamError, match="'m2dx' run, not 'm2d'"):
        upstreams.load("m2d", ckpt=_fake_m2d_checkpoint(tmp_path / "m2dx.pt", "m2dx"))


# -- 11: the mission's own pretraining commands on a fresh machine --------------------------------------------
def test_m2dx_without_an_m2d_run_says_to_pretrain_m2d_first(capsys, tmp_path, monkeypatch, tiny_root):
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("BENCH_DATA", str(tiny_root))
    rc, _, err = _cli(capsys, "pretrain", "m2dx", "--config", "tiny")
    _one_line(rc, err, "bench pretrain m2d` first", "--init CKPT")
    assert not (tmp_path / "runs").exists()


def test_missing_tiny_profile_names_tiny_and_leaves_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "no-data"))
    for method in ("m2d", "score"):
        rc, _, err = _cli(capsys, "pretrain", method, "--config", "tiny")
        _one_line(rc, err, "bench data build --profile tiny`")
    _fake_m2d_checkpoint(tmp_path / "runs" / "m2d" / "r1" / "checkpoint.pt")
    rc, _, err = _cli(capsys, "pretrain", "m2dx", "--config", "tiny")
    assert rc == 2 and "--profile tiny`" in err[-1] and "r1/checkpoint.pt" in err[0]  # default init, then the corpus
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["m2d"] and not (tmp_path / "no-data").exists()


def test_m2dx_starts_from_and_distils_the_newest_m2d_run(capsys, tmp_path, monkeypatch, tiny_root):
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("BENCH_DATA", str(tiny_root))
    ckpt = _fake_m2d_checkpoint(tmp_path / "runs" / "m2d" / "r1" / "checkpoint.pt")
    rc, _, err = _cli(capsys, "pretrain", "m2dx", "--config", "tiny", "--set", "train.steps=2", "--set",
                      "train.warmup_steps=1", "--set", "train.threads=1", "--set", "train.tensorboard=false")
    assert rc == 0, err
    (run,) = (tmp_path / "runs" / "m2dx").glob("*/checkpoint.pt")
    saved = torch.load(run, weights_only=True)
    assert saved["method"] == "m2dx" and saved["config"]["init"] == str(ckpt)
    assert saved["config"]["offline"]["teacher"] == "init" and saved["config"]["offline"]["distill_weight"] > 0


def test_score_with_another_base_drops_the_presets_base_options(capsys, tmp_path):
    import yaml

    from upstreams.score.pretrain import METHOD, _load_base
    from upstreams.training.run import resolve_config

    ckpt = _fake_m2d_checkpoint(tmp_path / "m2d.pt")
    rc, out, err = _cli(capsys, "pretrain", "score", "--config", "tiny", "--base", "m2d", "--base-ckpt", ckpt,
                        "--print-config")
    assert rc == 0, err
    cfg = yaml.safe_load(out)
    assert (cfg["base"], cfg["base_ckpt"], cfg["base_options"]) == ("m2d", str(ckpt), [])
    resolved, _ = resolve_config(METHOD, "tiny", {"base": "m2d", "base_ckpt": str(ckpt)})
    assert _load_base(resolved)[1] == str(ckpt)  # m2d loads: no `arch` option of the tiny random base
    kept, _ = resolve_config(METHOD, "tiny", {"base_options": ["arch=mini"]})
    assert (kept.base, kept.base_options) == ("random", ("arch=mini",))


# -- 9: artefacts follow the umask ---------------------------------------------------------------------------
def test_atomic_writers_apply_the_umask(tmp_path):
    from upstreams.fileio import atomic_directory, atomic_path, atomic_write_json

    old = os.umask(0o022)
    try:
        f = atomic_write_json(tmp_path / "new" / "r.json", {"a": 1})
        with atomic_path(tmp_path / "p.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "inner").write_text("x")
        modes = [os.stat(p).st_mode & 0o777 for p in (f, tmp_path / "p.bin", tmp_path / "d", tmp_path / "d" / "inner")]
        assert modes == [0o644, 0o644, 0o755, 0o644]
        os.umask(0o077)
        assert os.stat(atomic_write_json(tmp_path / "private.json", {})).st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# -- 12: the heatmap's caption fits in the figure ------------------------------------------------------------
def test_heatmap_caption_is_inside_the_figure(tmp_path, monkeypatch):
    import pandas as pd

    import bench.results.plots as plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or Path(path))
    df = pd.DataFrame([{"upstream": "fbank", "task": "esc50", "protocol": "linear", "metric": "accuracy",
                        "score": 50.0, "higher_is_better": True, "checkpoint_sha256": "", "std": None}])
    plots.heatmap(df, tmp_path / "x.png")
    fig = figs[0]
    fig.canvas.draw()
    box = fig.axes[0].xaxis.label.get_window_extent(fig.canvas.get_renderer())
    width, height = fig.bbox.width, fig.bbox.height
    assert box.x0 >= 0 and box.x1 <= width and box.y0 >= 0 and box.y1 <= height
