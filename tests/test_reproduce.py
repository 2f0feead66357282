"""`bench reproduce`: the plan, stage keys, the claims report, and a tiny reproduction end to end
that is then re-run to show finished stages are skipped and forced ones redone."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from bench.study.keys import comparable_config
from bench.study.plans import plan
from bench.results.report import claims_table, relative_improvement


def test_mini_plan_has_every_stage_in_dependency_order():
    stages = plan("mini")
    names = [s.name for s in stages]
    assert names[:5] == ["data", "pretrain-m2d", "pretrain-m2d_speech", "pretrain-m2dx", "pretrain-score"]
    evals = [s for s in stages if s.kind == "eval"]
    pairs = {(s.params["task"], s.params["protocol"]) for s in evals}
    assert {t for t, _ in pairs} == {"asr", "pr", "qbe", "esc50", "speech_commands", "icbhi"}
    assert {("esc50", "finetune"), ("icbhi", "finetune"), ("qbe", "dtw")} <= pairs
    assert {s.params["upstream"] for s in evals} == {"fbank", "random", "m2d", "m2dx", "score"}
    assert not [s for s in evals if s.params["upstream"] == "fbank" and s.params["protocol"] == "finetune"]
    by_name = {s.name: s for s in stages}
    assert by_name["pretrain-m2dx"].params["init"] == "m2d" and by_name["pretrain-score"].params["base"] == "m2d"
    assert by_name["eval-score-pr-weighted"].needs == ("data", "pretrain-score")
    # speech tasks get the 40 ms speech preset's run (m2d, its twin, SCORE's base); clip tasks the clip preset's
    speech = by_name["pretrain-m2d_speech"]
    assert (speech.params["method"], speech.params["preset"], speech.params["variant"]) == ("m2d", "mini_speech", "speech")
    assert by_name["pretrain-score"].params["base_run"] == "m2d_speech"
    assert by_name["pretrain-score"].needs == ("data", "pretrain-m2d_speech")
    for task, protocol in (("qbe", "dtw"), ("pr", "weighted"), ("asr", "weighted")):
        assert by_name[f"eval-m2d-{task}-{protocol}"].params["checkpoint_of"] == "pretrain-m2d_speech"
        assert by_name[f"eval-random-{task}-{protocol}"].params["like_of"] == "pretrain-m2d_speech"
    assert "checkpoint_of" not in by_name["eval-m2d-esc50-linear"].params
    assert by_name["eval-random-esc50-linear"].params["like_of"] == "pretrain-m2d"
    # a clip-only study without SCORE pretrains no speech run
    clip = plan("mini", upstreams=("random", "m2d"), tasks=("esc50",))
    assert [s.name for s in clip if s.kind == "pretrain"] == ["pretrain-m2d"]
    for s in stages:  # every dependency runs earlier
        assert all(names.index(n) < names.index(s.name) for n in s.needs)


def test_plan_filters_and_quick_plan_pretrains_m2d_against_its_twin():
    stages = plan("mini", upstreams=("fbank",), tasks=("qbe",))
    assert [s.name for s in stages] == ["data", "eval-fbank-qbe-dtw"]
    quick = plan("mini", upstreams=("fbank", "random", "m2d"), quick=True)
    pre = [s for s in quick if s.kind == "pretrain"]
    assert [(s.name, s.params["method"], s.params["preset"]) for s in pre] == [("pretrain-m2d", "m2d", "quick")]
    evals = [s for s in quick if s.kind == "eval"]
    assert {s.params["task"] for s in evals} == {"esc50", "speech_commands", "icbhi"}
    assert {s.params["protocol"] for s in evals} == {"linear", "knn"}
    assert {s.params["upstream"] for s in evals} == {"fbank", "random", "m2d"}
    for s in evals:  # m2d needs its run; random is that run's step-0 twin
        if s.params["upstream"] in ("m2d", "random"):
            assert "pretrain-m2d" in s.needs
        if s.params["upstream"] == "random":
            assert s.params["like_of"] == "pretrain-m2d"
    assert set(quick[0].params["datasets"]) == {"esc50", "speech_commands", "icbhi", "librispeech", "pretrain"}
    # without m2d the quick plan builds only the clip tasks and pretrains nothing
    base = plan("mini", upstreams=("fbank",), quick=True)
    assert not [s for s in base if s.kind == "pretrain"]
    assert set(base[0].params["datasets"]) == {"esc50", "speech_commands", "icbhi"}


def test_plan_rejects_unknown_names():
    from bench.errors import UserError

    with pytest.raises(UserError, match="unknown wav2vec"):
        plan("mini", upstreams=("wav2vec",))
    with pytest.raises(UserError, match="unknown sid"):
        plan("mini", tasks=("sid",))


def test_comparable_config_ignores_runtime_and_hashes_checkpoints(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"w": torch.ones(2)}, a)
    b.write_bytes(a.read_bytes())  # same contents, other path
    (tmp_path / "x").mkdir(), (tmp_path / "y").mkdir()
    (tmp_path / "x" / "index.csv").write_text("path\na.flac\n")
    (tmp_path / "y" / "index.csv").write_text("path\na.flac\n")
    cfg = {"train": {"steps": 10, "device": "cpu", "progress": True}, "data": {"index": str(tmp_path / "x/index.csv")},
           "init": str(a)}
    other = {"train": {"steps": 10, "device": "cuda", "progress": False},
             "data": {"index": str(tmp_path / "y/index.csv")}, "init": str(b)}
    assert comparable_config(cfg) == comparable_config(other)
    assert comparable_config(cfg) != comparable_config({**other, "train": {"steps": 11}})
    (tmp_path / "y" / "index.csv").write_text("path\nb.flac\n")  # another corpus
    assert comparable_config(cfg) != comparable_config(other)
    (tmp_path / "y" / "index.csv").write_text("path\na.flac\n")
    torch.save({"w": torch.zeros(2)}, b)  # other weights
    assert comparable_config(cfg) != comparable_config(other)


def _df(rows):
    """Rows (upstream, task, protocol, metric, per-seed scores, higher_is_better), one unit per seed."""
    from bench.results.stats import Unit

    out = []
    for up, task, protocol, metric, scores, hib in rows:
        out.append({"upstream": up, "task": task, "protocol": protocol, "metric": metric,
                    "score": sum(scores) / len(scores), "higher_is_better": hib, "std": None,
                    "units": [Unit(s, "test", v) for s, v in enumerate(scores)]})
    return pd.DataFrame(out)


def test_claims_are_paired_tests_in_the_papers_direction():
    assert relative_improvement(10.0, 9.0, higher_is_better=False) == pytest.approx(10.0)
    assert relative_improvement(0.5, 0.55, higher_is_better=True) == pytest.approx(10.0)
    df = _df([
        ("m2d", "pr", "weighted", "per", [20.0, 21.0, 19.5], False),
        ("score", "pr", "weighted", "per", [19.0, 19.8, 18.1], False),
        ("random", "pr", "weighted", "per", [30.0, 33.0, 29.0], False),
        ("m2d", "icbhi", "linear", "icbhi_score", [55.0, 56.0, 55.5], True),
        ("m2dx", "icbhi", "linear", "icbhi_score", [54.0, 54.5, 54.7], True),
        ("m2d", "qbe", "dtw", "mtwv", [0.0, 0.0, 0.0], True), ("score", "qbe", "dtw", "mtwv", [0.0, 0.0, 0.0], True),
    ])
    claims = {(c.claim.split()[0], c.task): c for c in claims_table(df)}
    assert claims[("M2D", "pr")].verdict == "holds" and claims[("M2D", "pr")].test.p < 0.05
    assert claims[("SCORE", "pr")].verdict == "holds"
    assert claims[("M2D-X", "icbhi")].verdict == "reversed" and claims[("M2D-X", "icbhi")].holds is False
    assert claims[("SCORE", "qbe")].holds is None  # 0 vs 0: nothing to judge


def test_claims_at_chance_level_one_seed_or_within_noise_are_inconclusive():
    df = _df([
        ("m2d", "asr", "weighted", "wer", [97.2, 96.0], False), ("random", "asr", "weighted", "wer", [100.0, 99.0], False),
        ("m2d", "pr", "weighted", "per", [89.0], False), ("random", "pr", "weighted", "per", [95.0], False),
        ("m2d", "esc50", "linear", "accuracy", [30.0, 36.0, 31.0], True),
        ("random", "esc50", "linear", "accuracy", [33.0, 30.0, 34.0], True),
        ("m2d", "qbe", "dtw", "mtwv", [0.005, 0.004], True), ("random", "qbe", "dtw", "mtwv", [0.006, 0.007], True),
    ])
    claims = {c.task + " " + c.protocol: c for c in claims_table(df)}
    assert claims["asr weighted"].holds is None and "chance" in claims["asr weighted"].why
    assert claims["qbe dtw"].holds is None and "chance" in claims["qbe dtw"].why
    assert claims["pr weighted"].holds is None and "one shared unit" in claims["pr weighted"].why  # one seed: no test
    assert claims["esc50 linear"].holds is None and claims["esc50 linear"].why.startswith("p = ")


def test_seeds_plan_pretrains_and_evaluates_per_seed_against_each_seeds_twin():
    stages = plan("mini", seeds=2, tasks=("esc50",), protocols=("linear",))
    by = {s.name: s for s in stages}
    assert {"pretrain-m2d", "pretrain-m2d-seed1", "pretrain-m2dx-seed1", "pretrain-score-seed1"} <= set(by)
    assert by["pretrain-m2d-seed1"].params["overrides"]["train"]["seed"] == 1
    assert by["pretrain-m2dx-seed1"].params["init"] == "m2d-seed1"
    assert by["pretrain-score-seed1"].params["base_run"] == "m2d_speech-seed1"
    assert by["pretrain-m2d_speech-seed1"].params["overrides"]["train"]["seed"] == 1
    twin = by["eval-random-esc50-linear-seed1"]
    assert twin.params["like_of"] == "pretrain-m2d-seed1" and twin.params["seed"] == 1
    assert "pretrain-m2d-seed1" in twin.needs
    assert by["eval-m2dx-esc50-linear-seed1"].params["checkpoint_of"] == "pretrain-m2dx-seed1"
    assert "seed" not in by["eval-fbank-esc50-linear"].params and by["eval-fbank-esc50-linear-seed1"].params["seed"] == 1
    names = [s.name for s in stages]
    for s in stages:
        assert all(names.index(n) < names.index(s.name) for n in s.needs)


def _run(args: list[str]) -> int:
    from bench.cli import main

    return main(["reproduce", *args])


@pytest.mark.slow
def test_tiny_reproduction_end_to_end_then_skips_finished_stages(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "results"
    args = ["--profile", "tiny", "--out", str(out), "--data-root", str(tiny_root),
            "--cache-root", str(tmp_path / "cache"), "--tasks", "icbhi", "qbe", "pr"]
    assert _run(args) == 0
    for artefact in ("leaderboard.csv", "leaderboard.png", "report.md", "stages.csv", "tasks/icbhi.csv",
                     "tasks/qbe.csv", "tasks/pr.csv", "plots/icbhi.png", "plots/pr.png", "plots/qbe.png"):
        assert (out / artefact).is_file() and (out / artefact).stat().st_size > 0, artefact
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.columns[:5]) == ["upstream", "task", "protocol", "metric", "score"]
    assert set(board.upstream) == {"fbank", "random", "m2d", "m2dx", "score"}
    assert {"finetune", "weighted", "linear"} <= set(board[board.task == "icbhi"].protocol)
    report = (out / "report.md").read_text()
    for text in ("M2D beats its step-0 twin", "M2D-X with background noise", "SCORE improves content tasks",
                 "Commit: `", "Total wall time", "difference [95 % CI]"):
        assert text in report
    # the control is the step-0 twin of the m2d run: its records name the run's checkpoint by hash, no path
    twin = json.loads(next((out / "records" / "icbhi").glob("random__linear__*.json")).read_text())
    assert twin["upstream_options"]["like"].startswith("sha256:")
    assert set(board.columns[5:9]) == {"n_seeds", "score_std", "ci95_low", "ci95_high"}
    for method in ("m2d", "m2dx", "score"):
        ckpt = tmp_path / "runs" / method / "reproduce-tiny" / "checkpoint.pt"
        assert ckpt.is_file()
    m2dx_cfg = torch.load(tmp_path / "runs" / "m2dx" / "reproduce-tiny" / "checkpoint.pt", weights_only=True)["config"]
    assert m2dx_cfg["init"].endswith("m2d/reproduce-tiny/checkpoint.pt") and m2dx_cfg["noise"]["eta"] > 0
    records = sorted((out / "records").rglob("*.json"))
    markers = {p.name: json.loads(p.read_text()) for p in (out / "stages").glob("*.json")}
    capsys.readouterr()

    # second run: nothing is redone, the same records stay in the leaderboard
    assert _run(args) == 0
    err = capsys.readouterr().err
    assert "pretrain-m2d: up to date, skipped" in err and "eval-score-pr-weighted: up to date, skipped" in err
    assert ": running" not in err.replace("data: running", "")
    assert sorted((out / "records").rglob("*.json")) == records
    assert pd.read_csv(out / "leaderboard.csv").equals(board)

    # a forced stage is redone (a new record replaces the old one); the others stay skipped
    assert _run(args + ["--force", "eval-fbank-qbe-dtw"]) == 0
    err = capsys.readouterr().err
    assert "eval-fbank-qbe-dtw: running" in err and "eval-m2d-qbe-dtw: up to date, skipped" in err
    assert len(list((out / "records").rglob("*.json"))) == len(records) + 1
    assert json.loads((out / "stages" / "eval-m2d-qbe-dtw.json").read_text()) == markers["eval-m2d-qbe-dtw.json"]
    assert len(pd.read_csv(out / "leaderboard.csv")) == len(board)

    # --render-only runs nothing: unfinished stages (asr here) are named in the report, not run
    n_records = len(list((out / "records").rglob("*.json")))
    assert _run(args[:-3] + ["icbhi", "qbe", "pr", "asr", "--render-only"]) == 0
    err = capsys.readouterr().err
    assert "eval-fbank-asr-weighted: not run (--render-only)" in err and ": running" not in err.replace("data: running", "")
    assert len(list((out / "records").rglob("*.json"))) == n_records
    assert "eval-score-asr-weighted" in (out / "report.md").read_text()

    # a fresh checkout holds the committed results but not the checkpoints under runs/: rendering still
    # shows every finished stage (re-running would pretrain again)
    (tmp_path / "runs").rename(tmp_path / "runs-elsewhere")
    assert _run(args + ["--render-only"]) == 0
    err = capsys.readouterr().err
    assert "pretrain-m2d: up to date, skipped" in err and "eval-score-pr-weighted: up to date, skipped" in err
    rendered = pd.read_csv(out / "leaderboard.csv")
    assert set(zip(rendered.upstream, rendered.task, rendered.protocol)) == set(zip(board.upstream, board.task, board.protocol))


def test_parallel_jobs_run_every_stage_in_workers_and_leave_markers_a_serial_run_skips(tiny_root, tmp_path,
                                                                                        monkeypatch, capsys):
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "results"
    args = ["--profile", "tiny", "--out", str(out), "--data-root", str(tiny_root),
            "--cache-root", str(tmp_path / "cache"), "--tasks", "icbhi", "qbe"]
    assert _run(args + ["--jobs", "2"]) == 0
    err = capsys.readouterr().err
    stages = pd.read_csv(out / "stages.csv")
    assert set(stages.status) == {"done"}, stages
    assert err.count("running (worker, 1 thread)") == len(stages) - 1  # all but the data stage
    # pretraining starts first and the baselines' evaluations run beside it
    started = [line.split(":")[0].removeprefix("[reproduce] ") for line in err.splitlines() if "running (worker" in line]
    assert started[0] == "pretrain-m2d" and started[1].startswith("eval-") and started[1].split("-")[1] in ("fbank", "random")
    # finetune (longest) before the frozen protocols among the baselines' ready stages
    assert started.index("eval-random-icbhi-finetune") < started.index("eval-random-icbhi-linear")
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board.upstream) == {"fbank", "random", "m2d", "m2dx", "score"}
    assert len(board) == len(stages) - 4  # one record per evaluation stage

    ledger = [json.loads(line) for line in (out / "invocations.jsonl").read_text().splitlines()]
    assert len(ledger) == 1 and ledger[0]["jobs"] == 2 and ledger[0]["stages_run"] == len(stages)
    assert "elapsed over the 1 invocation that ran stages" in (out / "report.md").read_text()

    assert _run(args) == 0  # one job: every stage the workers finished is skipped
    err = capsys.readouterr().err
    assert ": running" not in err.replace("data: running", "")
    assert pd.read_csv(out / "leaderboard.csv").equals(board)
    # only the data check ran: the ledger still holds just the run that did the work
    assert len((out / "invocations.jsonl").read_text().splitlines()) == 1


def test_jobs_benchmark_script_tiny_gives_the_same_scores(tiny_root):
    from script_module import load_script

    module = load_script("benchmarks/executors.py")
    report = module.main(["--profile", "tiny", "--data-root", str(tiny_root), "--tasks", "icbhi", "--json"])
    assert report["stages_scored"] == 5  # fbank and random x weighted, linear; random x finetune
    assert report["max_score_diff"] == 0.0 and report["one_job_s"] > 0 and report["parallel_s"] > 0


def test_jobs_below_one_is_a_one_line_error(tmp_path, capsys):
    assert _run(["--profile", "tiny", "--out", str(tmp_path / "r"), "--jobs", "0"]) == 2
    assert "--jobs 0" in capsys.readouterr().err


def test_unknown_forced_stage_is_a_one_line_error(tmp_path, capsys, monkeypatch, tiny_root):
    monkeypatch.setenv("BENCH_RUNS", str(tmp_path / "runs"))
    assert _run(["--profile", "tiny", "--out", str(tmp_path / "r"), "--data-root", str(tiny_root),
                 "--upstreams", "fbank", "--tasks", "qbe", "--force", "pretrain-m2d"]) == 2
    assert "--force: no stage named pretrain-m2d" in capsys.readouterr().err


def test_dry_run_lists_stages(capsys, tmp_path):
    assert _run(["--profile", "mini", "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "pretrain-m2dx" in err and "eval-score-asr-weighted" in err and "to run" in err
    assert not (tmp_path / "r").exists()


def test_report_is_rendered_only_from_this_runs_records(tmp_path):
    from bench.results.records import ResultRecord, write_record
    from bench.study.render import render
    from bench.study.stage import Stage, StageResult
    from bench.study.study import Study as Reproduction

    rep = Reproduction(tmp_path, "tiny", runs=tmp_path / "runs")
    stray = write_record(ResultRecord("fbank", "esc50", "linear", "accuracy", 50.0), tmp_path)  # not from a stage
    with pytest.raises(Exception, match=f"no evaluation finished under {tmp_path}"):
        render(rep, [Stage("data", "data")], "bench reproduce", 0.0)
    assert not (tmp_path / "report.md").exists()

    ours = write_record(ResultRecord("random", "esc50", "linear", "accuracy", 40.0), tmp_path)
    rep.results["eval-random-esc50-linear"] = StageResult("eval-random-esc50-linear", "done", 1.0,
                                                          {"record": str(ours.relative_to(tmp_path))})
    render(rep, [Stage("eval-random-esc50-linear", "eval")], "bench reproduce", 0.0)
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert list(board.upstream) == ["random"] and stray.name not in (tmp_path / "report.md").read_text()
    assert "code versions" not in (tmp_path / "report.md").read_text()  # one commit: nothing to say

    # a resumed reproduction whose records span two commits says so
    # (another upstream than the stray record's: the same key in the same second would make it a duplicate)
    older = write_record(ResultRecord("m2d", "esc50", "linear", "accuracy", 30.0), tmp_path)
    data = json.loads(older.read_text())
    older.write_text(json.dumps({**data, "git_commit": "0123456789abcdef"}))
    rep.results["eval-m2d-esc50-linear"] = StageResult("eval-m2d-esc50-linear", "done", 1.0,
                                                       {"record": str(older.relative_to(tmp_path))})
    render(rep, [Stage("eval-random-esc50-linear", "eval"), Stage("eval-m2d-esc50-linear", "eval")],
           "bench reproduce", 0.0)
    report = (tmp_path / "report.md").read_text()
    assert "2 code versions" in report and "0123456789ab (1)" in report


def test_mini_finetune_stages_run_in_bf16_and_pass_their_options(tmp_path, monkeypatch):
    """The mini plan's fine-tuning stages carry their reductions (one lr, fold 1, bf16) into `bench run`."""
    import types

    import bench.run
    from bench.study.study import Study as Reproduction

    stages = {s.name: s for s in plan("mini")}
    seen = []

    def fake_run(req, log=print):
        seen.append(req)
        out = tmp_path / "rec.json"
        out.write_text("{}")
        return types.SimpleNamespace(score=1.0, metric="accuracy", wall_time_s=0.1, checkpoint=None), out

    from bench.study.stage import StageResult

    monkeypatch.setattr(bench.run, "run", fake_run)
    rep = Reproduction(tmp_path, "mini", runs=tmp_path / "runs")
    rep.results["pretrain-m2d"] = StageResult("pretrain-m2d", "done", 1.0, {"checkpoint": "runs/m2d/x/checkpoint.pt"})
    rep._run_eval(stages["eval-random-esc50-finetune"], forced=False)
    rep._run_eval(stages["eval-random-esc50-linear"], forced=False)
    finetune, linear = seen
    assert (finetune.precision, finetune.lrs, finetune.folds) == ("bf16", [3e-3], ["fold1"])
    assert linear.precision == "fp32" and linear.lrs is None
    assert finetune.upstream_options == {"like": "runs/m2d/x/checkpoint.pt"}  # the step-0 twin of the m2d run
