"""`--executor ray`: each stage is a Ray task on an existing cluster, sized by its kind.

The cluster is the user's (`ray start --head` on one node, `ray start --address HEAD:6379` on the
others); this module only connects to it (`--ray-address auto|HOST:PORT`), never starts one, so a
sweep can share a cluster with other work. A stage asks for `num_cpus` / `num_gpus` from
`bench.study.stage.resources_of`: pretraining whole GPUs, fine-tuning one, frozen evaluations half a
GPU so two share one. On a cluster without GPUs the GPU requests are dropped (else Ray would wait for
ever). Workers import the `bench` installed on their node and read and write the same folders as the
parent, so results, runs and caches must sit on a filesystem every node mounts.
"""

from __future__ import annotations

import socket
from concurrent.futures import Future

from ...errors import UserError
from ..stage import Stage, resources_of
from ..worker import run_stage
from . import ExecutorOptions, Submission

__all__ = ["RayExecutor", "check_reachable"]

CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A HOST:PORT that accepts no TCP connection is one line, not Ray's minute of retries."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--ray-address {address}: give auto or HOST:PORT (the head's GCS port, 6379 by default)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise UserError(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one "
                        f"with `ray start --head` or give the head's HOST:PORT") from None


class RayExecutor:
    name = "ray"

    def __init__(self, options: ExecutorOptions, log=print):
        try:
            import ray
        except ImportError:
            raise UserError("--executor ray needs the ray package: pip install 'ray[default]'") from None
        address = options.ray_address or "auto"
        if address != "auto":
            check_reachable(address.removeprefix("ray://"))
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=True, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--ray-address {address}: could not connect to a Ray cluster ({first}); start one "
                            f"with `ray start --head` or give the head's HOST:PORT") from None
        self._ray = ray
        total = ray.cluster_resources()
        self.cluster_cpus = int(total.get("CPU", 1))
        self.cluster_gpus = float(total.get("GPU", 0))
        self.slots = options.jobs or max(1, self.cluster_cpus)
        self.pretrain_gpus = options.pretrain_gpus
        self._task = ray.remote(run_stage)
        self._refs: list = []
        log(f"[study] ray: connected to {address} ({self.cluster_cpus} CPUs, {self.cluster_gpus:g} GPUs)")

    def _request(self, stage: Stage) -> tuple[int, float]:
        res = resources_of(stage, self.pretrain_gpus)
        return res.cpus, (min(res.gpus, self.cluster_gpus) if self.cluster_gpus else 0.0)

    def placement(self, stage: Stage) -> str:
        cpus, gpus = self._request(stage)
        return f"ray, {cpus} cpu" + (f", {gpus:g} gpu" if gpus else "")

    def submit_all(self, items: list[Submission]) -> list[Future]:
        futures = []
        for i in items:
            cpus, gpus = self._request(i.stage)
            ref = self._task.options(num_cpus=cpus, num_gpus=gpus, max_retries=0, name=i.stage.name).remote(
                i.spec, i.stage, i.needs, i.forced, cpus)
            self._refs.append(ref)
            futures.append(ref.future())
        return futures

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in self._refs:
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # already finished, or the cluster went away: nothing left to cancel
                    pass
        self._ray.shutdown()
