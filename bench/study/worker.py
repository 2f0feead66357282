"""The one function every executor runs for a stage: compute it, return its outputs, write no marker.

Local processes, Ray tasks and Slurm jobs all call `run_stage`, so a stage computes the same thing
wherever it runs, and a study can switch executors between invocations: the parent writes the
done-markers from what this returns, and the next invocation skips them whichever executor it uses.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from .stage import Stage
from .work import StageWork

__all__ = ["run_stage", "set_threads", "init_local_worker", "exit_with_parent"]


def set_threads(threads: int) -> None:
    """Torch threads of a worker: the cores its executor gave this stage, so stages side by side do not fight."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


def exit_with_parent(parent_pid: int, interval: float = 1.0) -> threading.Thread:
    """End this process soon after `parent_pid` is gone.

    A local worker outlives a parent killed with SIGKILL or SIGTERM (the pool never tells it), and an
    orphaned pretraining worker goes on writing the run folder that the next invocation resumes in: two
    trainers then interleave one log and overwrite one checkpoint. Polling the parent id works on every
    POSIX system (prctl's parent-death signal is Linux-only and fires when the spawning *thread* exits)."""
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
                os._exit(1)
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def init_local_worker(threads: int, parent_pid: int) -> None:
    """Initialiser of a local pool worker: its torch threads, and no life after its parent."""
    set_threads(threads)
    exit_with_parent(parent_pid)


def run_stage(spec: dict, stage: Stage, needs: dict, forced: bool, threads: int | None = None) -> tuple[dict, str]:
    """Compute `stage` with `needs` (name -> StageResult of the stages it depends on); `spec` holds the
    folders and profile of `bench.study.work.StageWork`."""
    if threads:
        set_threads(threads)
    work = StageWork(**spec, log=lambda m: print(m, file=sys.stderr, flush=True))
    work.results.update(needs)
    return getattr(work, f"_run_{stage.kind}")(stage, forced)
