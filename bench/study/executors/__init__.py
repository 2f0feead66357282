"""Executors: where the stages of a study compute. One interface, three engines.

  local  a pool of `--jobs N` processes on this machine (N = 1: in this process, one stage at a time)
  ray    tasks on an existing Ray cluster (`--ray-address auto|HOST:PORT`), resources from the stage kind
  slurm  Slurm jobs through submitit (`--slurm-partition`, `--slurm-gpus-per-node`, `--slurm-time`);
         the stages ready at one moment go in as one array job

Every executor hands back `concurrent.futures.Future`s of `bench.study.worker.run_stage`; the parent
(`bench.study.study.Study`) alone writes done-markers, records' index and the ledger, so a study
started with one executor resumes with another. `make_executor` checks its input (unknown name,
unreachable Ray cluster, no `sbatch`) before any stage runs, and fails in one line.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from ...errors import UserError
from ..stage import Stage

__all__ = ["EXECUTORS", "ExecutorOptions", "Executor", "Submission", "make_executor"]

EXECUTORS = ("local", "ray", "slurm")


@dataclass(frozen=True)
class ExecutorOptions:
    """Everything the command line can say about executors (each engine reads its own fields)."""

    name: str = "local"
    jobs: int | None = None  # stages in flight at most (local: processes; default: 1 local, cluster size otherwise)
    ray_address: str = "auto"
    slurm_partition: str | None = None
    slurm_gpus_per_node: int = 0  # GPUs of one node; a pretraining stage takes all of them (torchrun semantics)
    slurm_time_min: int = 240
    slurm_cluster: str = "slurm"  # "local": submitit's LocalExecutor, the same submission path without Slurm
    pretrain_gpus: int = 1  # Ray: GPUs per pretraining stage


@dataclass(frozen=True)
class Submission:
    """One stage to compute: the arguments of `run_stage` apart from the threads its resources give."""

    spec: dict
    stage: Stage
    needs: dict
    forced: bool


class Executor(Protocol):
    name: str
    slots: int  # stages in flight at most

    def placement(self, stage: Stage) -> str:
        """How the log names where `stage` runs, e.g. "worker, 1 thread" or "ray, 1 cpu"."""

    def submit_all(self, items: list[Submission]) -> list[Future]:
        """Start every item; futures resolve to `run_stage`'s `(outputs, note)`."""

    def close(self, cancel: bool = False) -> None:
        """Release workers (and cancel what is still queued when `cancel`)."""


def make_executor(options: ExecutorOptions, out, log=print) -> Executor | None:
    """The executor `options` name, connected and checked; None for one local job (stages run in this process)."""
    name = options.name
    if name not in EXECUTORS:
        raise UserError(f"--executor {name}: unknown executor; choose one of {', '.join(EXECUTORS)}")
    if options.jobs is not None and options.jobs < 1:
        raise UserError(f"--jobs {options.jobs}: give 1 or more (stages run at once; one per CPU core at most pays)")
    if name == "local":
        if (options.jobs or 1) == 1:
            return None
        from .local import LocalExecutor

        return LocalExecutor(options.jobs)
    if name == "ray":
        from .ray_cluster import RayExecutor

        return RayExecutor(options, log)
    from .slurm import SlurmExecutor

    return SlurmExecutor(options, out, log)
