"""Data-parallel plumbing, nanoGPT style: DDP is on when torchrun sets RANK/WORLD_SIZE/LOCAL_RANK.

One process per device; gloo on CPU, NCCL on CUDA. A global batch of `batch_size` clips is split
into `world_size x accumulation` micro-batches, so gradient accumulation is divided by the world
size and the effective batch (and so the lr) does not depend on how many processes run. Only rank 0
logs and writes checkpoints (the others wait at a barrier; every rank's RNG state is gathered into
it); every rank computes the same schedule, EMA and data order, and draws its own micro-batches
(slot `a * world_size + rank` of each step), so no sampler has to shard the data.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError

__all__ = ["DistEnv", "setup", "teardown", "accumulation_steps", "wrap", "barrier", "all_reduce_mean", "gather_objects",
           "no_sync"]


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    try:
        return default if raw in (None, "") else int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def setup(device: str = "auto") -> tuple[DistEnv, torch.device]:
    """Read the torchrun environment, start the process group if needed, pick this process's device."""
    env = DistEnv(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but CUDA is not available; use train.device=cpu")
    if use_cuda:
        torch.cuda.set_device(env.local_rank)
        dev = torch.device("cuda", env.local_rank)
    else:
        dev = torch.device("cpu")
    if env.enabled and not dist.is_initialized():
        # long timeout: rank 0 may spend a while building the feature cache while the others wait
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=3))
    return env, dev


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def accumulation_steps(batch_size: int, micro_batch: int, world_size: int) -> tuple[int, int]:
    """(micro_batch, accumulation steps) such that micro_batch * accumulation * world_size == batch_size."""
    micro = micro_batch or batch_size // world_size
    if micro < 1 or batch_size % (micro * world_size):
        raise ConfigError(
            f"train.batch_size {batch_size} is not a multiple of micro_batch {micro} x {world_size} processes; "
            f"choose train.micro_batch dividing {batch_size // max(1, world_size)}"
        )
    return micro, batch_size // (micro * world_size)


def wrap(model: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    if not env.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    # buffers (positions, EMA counter) are identical on every rank by construction: no per-step broadcast
    params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, **sync)


def no_sync(model: nn.Module, skip: bool):
    """Skip the gradient all-reduce for all but the last micro-batch of an accumulation."""
    if skip and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def barrier(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.enabled and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
        values /= env.world_size
    return values


def gather_objects(obj, env: DistEnv) -> list:
    """`obj` of every rank, in rank order, on every rank (`[obj]` without DDP)."""
    if not (env.enabled and dist.is_initialized()):
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
