"""The one function every executor runs for a stage: compute it, return its outputs, write no marker.

Local processes, Ray tasks and Slurm jobs all call `run_stage`, so a stage computes the same thing
wherever it runs, and a study can switch executors between invocations: the parent writes the
done-markers from what this returns, and the next invocation skips them whichever executor it uses.
"""

from __future__ import annotations

import sys

from .stage import Stage
from .work import StageWork

__all__ = ["run_stage", "set_threads"]


def set_threads(threads: int) -> None:
    """Torch threads of a worker: the cores its executor gave this stage, so stages side by side do not fight."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


def run_stage(spec: dict, stage: Stage, needs: dict, forced: bool, threads: int | None = None) -> tuple[dict, str]:
    """Compute `stage` with `needs` (name -> StageResult of the stages it depends on); `spec` holds the
    folders and profile of `bench.study.work.StageWork`."""
    if threads:
        set_threads(threads)
    work = StageWork(**spec, log=lambda m: print(m, file=sys.stderr, flush=True))
    work.results.update(needs)
    return getattr(work, f"_run_{stage.kind}")(stage, forced)
