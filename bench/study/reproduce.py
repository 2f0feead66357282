"""Entry points of a study: `bench reproduce` (the built-in plan) and `bench sweep` (a plan file).

Both expand to a list of `bench.study.stage.Stage`s and run them the same way: check the executor
(and the plan) before anything runs, let `bench.study.study.Study` skip what is done and hand the
rest to the executor, append the invocation to the ledger, then render the tables and report.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Callable

from ..errors import UserError
from .executors import ExecutorOptions, make_executor
from .ledger import log_invocation
from .plans import UPSTREAMS, plan
from .render import render
from .stage import Stage, resources_of
from .study import Study

__all__ = ["reproduce", "sweep", "run_study", "dry_run_lines", "BUILTIN_PLANS"]

BUILTIN_PLANS = ("reproduce", "quickstart")  # `bench sweep NAME` with no file of that name


def dry_run_lines(study: Study, stages: list[Stage], pretrain_gpus: int = 1) -> list[str]:
    """One line per stage: name, kind, what it asks of a worker, whether it is done, what it waits for."""
    lines = []
    for s in stages:
        m = study.read_marker(s)
        status = "done " + m.get("finished", "") if m else "to run"
        needs = f"  needs {', '.join(s.needs)}" if s.needs else ""
        lines.append(f"{s.name:40} {s.kind:8} {resources_of(s, pretrain_gpus).text():14} {status}{needs}")
    return lines


def run_study(stages: list[Stage], study: Study, executor: ExecutorOptions, command: str, dry_run: bool = False,
              render_only: bool = False, left_out: list[str] = (), notes: list[str] | None = None) -> dict[str, Path]:
    if dry_run:
        for line in dry_run_lines(study, stages, executor.pretrain_gpus):
            study.log(line)
        return {}
    engine = None if render_only else make_executor(executor, study.out, study.log)  # bad input: before any stage
    t0 = time.perf_counter()
    try:
        study.run(stages, render_only=render_only, executor=engine)
    finally:  # an interrupted run's time counts too: its finished stages are kept
        log_invocation(study.out, command, time.perf_counter() - t0, engine.slots if engine else 1,
                       list(study.results.values()), executor.name)
    return render(study, stages, command, time.perf_counter() - t0, left_out, notes)


def reproduce(profile: str = "mini", out: str | Path | None = None, runs: str | None = None,
              data_root: str | None = None, cache_root: str | None = None,
              upstreams: tuple[str, ...] = UPSTREAMS, tasks: tuple[str, ...] | None = None,
              protocols: tuple[str, ...] | None = None, force: tuple[str, ...] = (), dry_run: bool = False,
              progress: bool = False, quick: bool = False, command: str | None = None, render_only: bool = False,
              jobs: int = 1, seeds: int = 1, executor: ExecutorOptions | None = None,
              log: Callable[[str], None] = print) -> dict[str, Path]:
    """The built-in study (`bench.study.plans.plan`); `quick` is `bench quickstart`'s plan."""
    executor = executor or ExecutorOptions(jobs=jobs)
    if executor.jobs is not None and executor.jobs < 1:
        raise UserError(f"--jobs {executor.jobs}: give 1 or more (stages run at once; one per CPU core at most pays)")
    stages = plan(profile, upstreams, tasks, protocols, quick=quick, seeds=seeds)
    study = Study(out or Path("results") / profile, profile, runs, data_root, cache_root, force, log, progress)
    planned = {s.name for s in stages}
    left_out = [] if quick else [s.name for s in plan(profile, seeds=seeds) if s.name not in planned]
    command = command or ("bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    return run_study(stages, study, executor, command, dry_run, render_only, left_out)


def sweep(plan_data: dict, out: str | Path, runs: str | None = None, data_root: str | None = None,
          cache_root: str | None = None, profile: str | None = None, force: tuple[str, ...] = (),
          dry_run: bool = False, progress: bool = False, render_only: bool = False, command: str | None = None,
          executor: ExecutorOptions | None = None, log: Callable[[str], None] = print) -> dict[str, Path]:
    """A plan file's study (`bench.study.sweep_plan`), checked whole before anything runs."""
    from .sweep_plan import expand

    executor = executor or ExecutorOptions()
    stages = expand(plan_data, profile)
    used = {s.params.get("profile") for s in stages} - {None}
    study = Study(out, used.pop() if used else (profile or "mini"), runs, data_root, cache_root, force, log, progress)
    command = command or ("bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    notes = ["Evaluations of a `bench sweep` plan; times are wall-clock seconds of each stage when it ran (a stage "
             "skipped on a later invocation keeps the time of the run that produced it)."]
    return run_study(stages, study, executor, command, dry_run, render_only, notes=notes)
