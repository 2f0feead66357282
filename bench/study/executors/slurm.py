"""`--executor slurm`: stages as Slurm jobs through submitit; the stages ready at once go in as array jobs.

A frozen or CTC evaluation takes one task with one GPU (when the partition has GPUs); a pretraining
stage takes every GPU of one node (`--slurm-gpus-per-node`) as that many tasks, and each task exports
torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, via submitit's
`TorchDistributedEnvironment`), which `upstreams/training/ddp.py` reads: the same DDP code as under
`torchrun`. Only rank 0's return value comes back. Job logs go to `<out>/slurm/`. With
`slurm_cluster="local"` (tests) submitit's LocalExecutor takes the same submission path without Slurm.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import shutil
from concurrent.futures import Future
from pathlib import Path

from ...errors import UserError
from ..stage import Stage, resources_of
from ..worker import run_stage
from . import ExecutorOptions, Submission

__all__ = ["SlurmExecutor", "run_stage_on_node"]


def run_stage_on_node(spec: dict, stage: Stage, needs: dict, forced: bool, threads: int, world_size: int):
    """A Slurm task's entry: with several tasks (one per GPU) set torchrun's environment, then compute."""
    if world_size > 1:
        from submitit.helpers import TorchDistributedEnvironment

        # every GPU of the node stays visible: ddp.py picks cuda:LOCAL_RANK itself
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return run_stage(spec, stage, needs, forced, threads)


class SlurmExecutor:
    name = "slurm"

    def __init__(self, options: ExecutorOptions, out, log=print):
        try:
            import submitit
        except ImportError:
            raise UserError("--executor slurm needs the submitit package: pip install submitit") from None
        if options.slurm_cluster == "slurm" and shutil.which("sbatch") is None:
            raise UserError("--executor slurm: no `sbatch` on PATH; run from a Slurm login node, or use "
                            "--executor local|ray")
        if options.slurm_gpus_per_node < 0 or options.slurm_time_min < 1:
            raise UserError(f"--slurm-gpus-per-node {options.slurm_gpus_per_node} / --slurm-time "
                            f"{options.slurm_time_min}: give GPUs >= 0 and minutes >= 1")
        self.options = options
        self.folder = Path(out).expanduser().resolve() / "slurm"
        self._executor = submitit.AutoExecutor(folder=str(self.folder), cluster=options.slurm_cluster)
        self.slots = options.jobs or 256
        self._jobs: list = []
        self._waiters = cf.ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="slurm-wait")

    def _shape(self, stage: Stage) -> tuple[int, int, int]:
        """(tasks, gpus per node, cpus per task) of `stage`'s job."""
        res = resources_of(stage)
        node_gpus = self.options.slurm_gpus_per_node
        if not node_gpus or not res.gpus:
            return 1, 0, res.cpus
        if stage.kind == "pretrain":
            return node_gpus, node_gpus, res.cpus
        return 1, min(node_gpus, math.ceil(res.gpus)), res.cpus

    def placement(self, stage: Stage) -> str:
        tasks, gpus, cpus = self._shape(stage)
        return f"slurm, {tasks} task{'s' * (tasks > 1)}, {gpus} gpu"

    def submit_all(self, items: list[Submission]) -> list[Future]:
        groups: dict[tuple, list[int]] = {}
        for n, i in enumerate(items):
            groups.setdefault(self._shape(i.stage), []).append(n)
        jobs: list = [None] * len(items)  # submitit's jobs; inside a batch they are filled in when it closes
        for (tasks, gpus, cpus), members in groups.items():
            params = {"timeout_min": self.options.slurm_time_min, "nodes": 1, "tasks_per_node": tasks,
                      "cpus_per_task": cpus, "gpus_per_node": gpus, "name": "bench-study"}
            if self.options.slurm_partition:
                params["slurm_partition"] = self.options.slurm_partition
            self._executor.update_parameters(**params)
            if len(members) > 1:
                with self._executor.batch():  # one array job for the stages of one shape
                    for n in members:
                        jobs[n] = self._submit(items[n], cpus, tasks)
            else:
                jobs[members[0]] = self._submit(items[members[0]], cpus, tasks)
        self._jobs += jobs
        return [self._waiters.submit(job.result) for job in jobs]

    def _submit(self, i: Submission, cpus: int, tasks: int):
        return self._executor.submit(run_stage_on_node, i.spec, i.stage, i.needs, i.forced, cpus, tasks)

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for job in self._jobs:
                if not job.done():
                    job.cancel(check=False)
        self._waiters.shutdown(wait=not cancel, cancel_futures=cancel)
