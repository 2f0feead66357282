"""`--executor local --jobs N`: N worker processes on this machine, cores // N torch threads each."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from concurrent.futures import Future

from ..stage import Stage
from ..worker import init_local_worker, run_stage
from . import Submission

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """A spawn-context process pool (a fresh interpreter per worker: no forked torch or thread state) whose
    workers end with the parent, so a killed study leaves no trainer behind."""

    name = "local"

    def __init__(self, jobs: int):
        self.slots = jobs
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self._pool = cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=init_local_worker, initargs=(self.threads, os.getpid()))

    def placement(self, stage: Stage) -> str:
        return f"worker, {self.threads} thread{'s' * (self.threads > 1)}"

    def submit_all(self, items: list[Submission]) -> list[Future]:
        return [self._pool.submit(run_stage, i.spec, i.stage, i.needs, i.forced) for i in items]

    def close(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
