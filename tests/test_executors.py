"""`bench sweep` and its executors: plan files expand and are checked before anything runs; a real local
Ray cluster and submitit's LocalExecutor (its real submission path) give the same scores as `local`;
a study started on one executor resumes on another and skips what is done."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml

from bench.cli import main
from bench.errors import UserError
from bench.study.executors import ExecutorOptions
from bench.study.reproduce import sweep
from bench.study.sweep_plan import expand


def _tiny_plan(tiny_root) -> dict:
    """fbank and a tiny random ViT on ICBHI (built-in tiny data, linear with one lr) and on ESC-50 given by
    path (a real-corpus layout, knn): four short evaluations."""
    return {"profile": "tiny",
            "upstreams": ["fbank", {"name": "random", "options": {"arch": "tiny"}, "label": "random-tiny"}],
            "tasks": [{"name": "icbhi", "protocols": ["linear"], "options": {"lrs": [1e-3]}},
                      {"name": "esc50", "dataset": str(tiny_root / "tiny" / "esc50"), "protocols": ["knn"],
                       "options": {"folds": ["fold1"]}}]}


def test_plan_expands_to_one_stage_per_upstream_task_protocol_seed(tiny_root):
    plan = {**_tiny_plan(tiny_root), "seeds": 2}
    stages = expand(plan)
    names = [s.name for s in stages]
    assert names[0] == "data" and stages[0].params == {"profile": "tiny", "datasets": ["icbhi"]}
    assert len(names) == 1 + 2 * 2 * 2 and "eval-random-tiny-esc50-knn-seed1" in names
    by = {s.name: s for s in stages}
    assert by["eval-fbank-icbhi-linear"].needs == ("data",) and by["eval-fbank-icbhi-linear"].params["lrs"] == [1e-3]
    assert by["eval-fbank-esc50-knn"].needs == () and by["eval-fbank-esc50-knn"].params["dataset"].endswith("esc50")
    assert by["eval-random-tiny-icbhi-linear-seed1"].params["upstream_options"] == {"arch": "tiny"}
    assert by["eval-random-tiny-icbhi-linear-seed1"].params["seed"] == 1


@pytest.mark.parametrize("change, message", [
    ({"upstreams": ["wav2nothing"]}, "plan: upstream wav2nothing: unknown upstream"),
    ({"tasks": ["sid"]}, "plan: unknown task sid"),
    ({"tasks": [{"name": "esc50", "dataset": "/nonexistent/ESC-50"}]}, "dataset /nonexistent/ESC-50: no such directory"),
    ({"tasks": [{"name": "qbe", "protocols": ["linear"]}]}, "task qbe has no protocol linear"),
    ({"upstreams": ["fbank", "fbank"]}, "upstream label(s) fbank appear twice"),
    ({"upstreams": [{"name": "fbank", "ckpt": "/nonexistent.pt"}]}, "ckpt /nonexistent.pt: no such file"),
    ({"seeds": 0}, "seeds 0"),
    ({"epochs": 3}, "unknown key(s) epochs"),
])
def test_bad_plans_are_one_line_errors(tiny_root, change, message):
    with pytest.raises(UserError) as err:
        expand({**_tiny_plan(tiny_root), **change})
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("flags, message", [
    (["--executor", "kubernetes"], "--executor kubernetes: unknown executor; choose one of local, ray, slurm"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:9"], "--ray-address 127.0.0.1:9: no Ray cluster answers there"),
    (["--executor", "slurm"], "--executor slurm: no `sbatch` on PATH"),
    (["--jobs", "0"], "--jobs 0: give 1 or more"),
])
def test_bad_executor_input_is_one_line_before_anything_runs(tiny_root, tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no sbatch here, whatever the machine has
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(_tiny_plan(tiny_root)))
    out = tmp_path / "out"
    assert main(["sweep", str(plan), "--out", str(out), "--data-root", str(tiny_root),
                 "--cache-root", str(tmp_path / "cache"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (out / "stages").exists()  # nothing ran, not even the data check


def test_dry_run_prints_each_stage_with_its_resources(tiny_root, tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(_tiny_plan(tiny_root)))
    assert main(["sweep", str(plan), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 5
    assert lines[1].split()[:2] == ["eval-fbank-icbhi-linear", "eval"] and "1 cpu, 0.5 gpu" in lines[1]
    assert "to run" in lines[1] and "needs data" in lines[1]
    assert main(["sweep", "reproduce", "--profile", "tiny", "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    builtin = capsys.readouterr().err
    assert "pretrain-m2d " in builtin and "1 cpu, 1 gpu" in builtin and "eval-score-asr-weighted" in builtin


def _scores(out) -> pd.Series:
    board = pd.read_csv(out / "leaderboard.csv")
    return board.set_index(["upstream", "task", "protocol"])["score"].sort_index()


def _run_sweep(plan, out, root, cache, executor: ExecutorOptions, log):
    return sweep(plan, out, data_root=str(root), cache_root=str(cache), executor=executor, command="test",
                 log=log.append)


@pytest.fixture(scope="module")
def local_scores(tiny_root, tmp_path_factory):
    """The tiny plan with one local job: the reference every executor must equal."""
    tmp = tmp_path_factory.mktemp("local")
    log: list[str] = []
    _run_sweep(_tiny_plan(tiny_root), tmp / "out", tiny_root, tmp / "cache", ExecutorOptions(), log)
    return _scores(tmp / "out")


@pytest.fixture(scope="module")
def ray_address():
    """A real Ray head on 127.0.0.1 with 2 CPUs, started for these tests and stopped after them."""
    pytest.importorskip("ray")
    from bench.study.executors.ray_local import local_ray_cluster

    with local_ray_cluster(num_cpus=2, start_timeout=90) as address:
        yield address


@pytest.mark.slow
def test_ray_cluster_gives_the_same_scores_as_local_and_local_resumes_it(tiny_root, tmp_path, local_scores,
                                                                          ray_address):
    out, log = tmp_path / "out", []
    _run_sweep(_tiny_plan(tiny_root), out, tiny_root, tmp_path / "cache",
               ExecutorOptions("ray", ray_address=ray_address), log)
    assert sum("running (ray, 1 cpu)" in line for line in log) == 4, log
    assert _scores(out).equals(local_scores)
    markers = sorted(p.name for p in (out / "stages").glob("*.json"))
    assert len(markers) == 5
    ledger = [json.loads(x) for x in (out / "invocations.jsonl").read_text().splitlines()]
    assert ledger[-1]["executor"] == "ray" and ledger[-1]["stages_run"] == 5

    # the same study resumed locally: every evaluation the Ray workers finished is skipped
    log.clear()
    _run_sweep(_tiny_plan(tiny_root), out, tiny_root, tmp_path / "cache", ExecutorOptions("local"), log)
    assert sum("up to date, skipped" in line for line in log) == 4 and not [x for x in log if ": running" in x
                                                                            and not x.startswith("[reproduce] data")]
    # and a plan that grows by one seed runs only the new stages on Ray
    log.clear()
    _run_sweep({**_tiny_plan(tiny_root), "seeds": [0, 1]}, out, tiny_root, tmp_path / "cache",
               ExecutorOptions("ray", ray_address=ray_address), log)
    ran = sorted(x.split(":")[0].removeprefix("[reproduce] ") for x in log if "running (ray" in x)
    assert ran == sorted(["eval-fbank-icbhi-linear-seed1", "eval-random-tiny-icbhi-linear-seed1",
                          "eval-fbank-esc50-knn-seed1", "eval-random-tiny-esc50-knn-seed1"])


@pytest.mark.slow
def test_submitit_local_executor_gives_the_same_scores(tiny_root, tmp_path, local_scores):
    pytest.importorskip("submitit")
    out, log = tmp_path / "out", []
    _run_sweep(_tiny_plan(tiny_root), out, tiny_root, tmp_path / "cache",
               ExecutorOptions("slurm", slurm_cluster="local", slurm_time_min=10), log)
    assert sum("running (slurm, 1 task, 0 gpu)" in line for line in log) == 4, log
    assert _scores(out).equals(local_scores)
    # submitit pickled each stage, ran it in a process of its own and pickled its result back
    assert len(list((out / "slurm").glob("*_submitted.pkl"))) == 4
    assert len(list((out / "slurm").glob("*_result.pkl"))) == 4


def test_slurm_pretraining_takes_every_gpu_of_a_node_as_torchrun_ranks(tmp_path, monkeypatch):
    """Shapes of the jobs, and what a Slurm task of a 4-GPU pretraining stage exports for ddp.py (no Slurm needed)."""
    pytest.importorskip("submitit")
    import bench.study.executors.slurm as slurm
    from bench.study.stage import Stage

    executor = slurm.SlurmExecutor(ExecutorOptions("slurm", slurm_cluster="local", slurm_gpus_per_node=4), tmp_path)
    pretrain = Stage("pretrain-m2d", "pretrain", {"method": "m2d"})
    frozen = Stage("eval-m2d-esc50-linear", "eval", {"upstream": "m2d", "task": "esc50", "protocol": "linear"})
    finetune = Stage("eval-m2d-esc50-finetune", "eval", {"upstream": "m2d", "task": "esc50", "protocol": "finetune"})
    assert executor._shape(pretrain) == (4, 4, 1)  # 4 tasks x 1 GPU each on one node
    assert executor._shape(frozen) == (1, 1, 1) and executor._shape(finetune) == (1, 1, 1)
    executor.close()

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(k, "")  # recorded, so the export below is undone after the test (a leaked
        monkeypatch.delenv(k)      # WORLD_SIZE=4 would make every later pretraining wait for 3 more ranks)
    slurm_env = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "3", "SLURM_LOCALID": "3",
                 "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "gpu17"}
    for k, v in slurm_env.items():
        monkeypatch.setenv(k, v)
    seen = {}
    monkeypatch.setattr(slurm, "run_stage", lambda *a: seen.update(
        {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}) or ({}, ""))
    slurm.run_stage_on_node({}, pretrain, {}, False, 1, 4)
    assert seen == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", "MASTER_ADDR": "gpu17"}  # what ddp.py reads


def test_local_workers_end_when_the_study_process_is_killed(tmp_path):
    """A SIGKILLed `bench reproduce` must not leave a worker training on: the next invocation resumes in the
    same run folder, and two trainers there interleave one log and overwrite one checkpoint."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, sys, time\n"
        "from bench.study.executors.local import LocalExecutor\n"
        "ex = LocalExecutor(1)\n"
        "pid = ex._pool.submit(os.getpid).result()\n"
        "ex._pool.submit(time.sleep, 120)\n"
        "print(pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "the worker outlived its killed parent"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    """Running or sleeping (an exited process waiting to be reaped is a zombie: gone for our purpose)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(line for line in f if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "Z" not in state.split()[1]
