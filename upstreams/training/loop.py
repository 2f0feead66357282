"""One readable training loop for every pretraining method (M2D, M2D-X, SCORE, ...).

A method plugs in by building a `Recipe`:

- `model`: an `nn.Module` whose `forward(batch)` returns `(loss, stats)` (stats: scalar tensors to log);
  everything it holds (EMA target, frozen teacher, counters) is saved and restored with it;
- `data`: a `BatchSource` whose `get(slot)` returns the micro-batch for a `Slot` (step, micro-batch
  index) as a dict of CPU tensors. It must be a pure function of the slot (draw randomness from
  `slot.generator(seed)`), which is what makes resume exact and lets DDP ranks draw disjoint
  micro-batches without talking; `get` runs in a prefetch thread, one slot ahead;
- `export(model)`: the weight-bundle keys that make a checkpoint loadable as an upstream;
- optionally `after_step(model, step, total_steps)` (EMA updates; returns scalars to log),
  `param_groups(model, weight_decay)` (which parameters train, with what decay; default: every
  parameter with `requires_grad`, no decay on biases, norms and tokens) and `probe(model, step)`
  (learning probes on fixed data, `probe.py`; returns `probe/...` scalars; rank 0 only).

`train` then does the rest the same way for everyone: AdamW, warm-up + cosine lr, gradient
accumulation and clipping, bf16 autocast, DDP, atomic checkpoints every N steps, exact resume, a
JSON-lines log, TensorBoard events, a progress bar and a loss plot.

Probes (`train.probe_every` > 0 and a recipe with `probe`): at step 0 of a fresh run, every
`probe_every` steps and at the last step, rank 0 calls `probe(model, step)` under `torch.no_grad`, in
eval mode and the training autocast, then puts the model back in training mode. A probe must draw
nothing from the global RNG (use its own generators), so a run with probes trains exactly like one
without (tested). Its scalars join the log line of that step (or get a line of their own at step 0
and between log lines); its time counts in `wall_s` but not in `sec_per_step`.
"""

from __future__ import annotations

import hashlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import Tensor, nn

from ..runs import CHECKPOINT_NAME
from .checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from .config import ConfigError, TrainConfig, to_dict
from .ddp import DistEnv, accumulation_steps, all_reduce_mean, barrier, gather_objects, no_sync, wrap
from .log import RunLog, plot_loss, read_log
from .schedule import run_length, warmup_cosine_lr

__all__ = ["Slot", "seed_for", "BatchSource", "Recipe", "TrainResult", "TrainingDiverged", "default_param_groups",
           "train"]


@dataclass(frozen=True)
class Slot:
    """Micro-batch `micro` (0 .. micros_per_step - 1, over all processes) of optimiser step `step`."""

    step: int
    micro: int
    micro_batch: int  # clips in this micro-batch
    micros_per_step: int  # world size x accumulation steps

    @property
    def first_sample(self) -> int:
        """Position of this micro-batch's first clip in the endless stream of clips."""
        return (self.step * self.micros_per_step + self.micro) * self.micro_batch

    def generator(self, seed: int, stream: str = "batch") -> torch.Generator:
        """A CPU generator owned by this slot: crops, masks, noise... drawn from it repeat on resume."""
        return torch.Generator().manual_seed(seed_for(seed, stream, self.step, self.micro))


def seed_for(*keys) -> int:
    """A 63-bit seed derived from any tuple of ints/strings (stable across runs, processes and machines)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class EpochOrder:
    """A seeded shuffle per epoch of `n` items: sample position p of the endless stream is item
    `order(p // n)[p % n]`. Only the last few epochs' permutations are kept (micro-batches straddle
    at most one epoch boundary), and any position can be recomputed, so resuming needs only the step."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._orders: dict[int, Tensor] = {}

    def _order(self, epoch: int) -> Tensor:
        if epoch not in self._orders:
            if len(self._orders) > 2:
                self._orders.pop(min(self._orders))
            gen = torch.Generator().manual_seed(seed_for(self.seed, "order", epoch))
            self._orders[epoch] = torch.randperm(self.n, generator=gen)
        return self._orders[epoch]

    def items(self, slot: Slot) -> list[int]:
        """Item indices of `slot`'s micro-batch."""
        positions = range(slot.first_sample, slot.first_sample + slot.micro_batch)
        return [int(self._order(p // self.n)[p % self.n]) for p in positions]


class BatchSource(Protocol):
    samples_per_epoch: int  # clips in one pass over the corpus

    def get(self, slot: Slot) -> dict[str, Tensor]: ...


@dataclass
class Recipe:
    method: str  # names the runs folder: <runs root>/<method>/<run name>
    config: Any  # frozen dataclass with a `train: TrainConfig` field; saved in full in every checkpoint
    model: nn.Module
    data: BatchSource
    export: Callable[[nn.Module], dict]
    after_step: Callable[[nn.Module, int, int], dict[str, float]] | None = None
    param_groups: Callable[[nn.Module, float], list[dict]] | None = None
    probe: Callable[[nn.Module, int], dict[str, float]] | None = None  # see the module docstring


@dataclass
class TrainResult:
    checkpoint: Path
    step: int
    total_steps: int
    log: Path
    plot: Path | None
    wall_s: float
    # what this process did (every rank returns its own): proof that DDP ranks shared the work and that
    # only rank 0 wrote checkpoints
    rank: int = 0
    world_size: int = 1
    micro_batches: int = 0  # forward/backward passes of this process
    micro_batch: int = 0  # clips per pass
    checkpoints_written: int = 0


class TrainingDiverged(ConfigError):
    pass


NO_DECAY_NAMES = ("cls_token", "mask_token", "pos_embed")


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """timm's split: weight decay on matrices only, not on biases, norms and learned tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(NO_DECAY_NAMES) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _batches(source: BatchSource, slots: Iterator[Slot], prefetch: bool) -> Iterator[dict[str, Tensor]]:
    """Micro-batches in slot order, the next one prepared in a background thread while this one trains."""
    if not prefetch:
        for slot in slots:
            yield source.get(slot)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="batch-prefetch") as pool:
        nxt = next(slots, None)
        pending = pool.submit(source.get, nxt) if nxt is not None else None
        while pending is not None:
            batch = pending.result()
            nxt = next(slots, None)
            pending = pool.submit(source.get, nxt) if nxt is not None else None
            yield batch


def train(recipe: Recipe, out_dir: str | Path, env: DistEnv, device: torch.device, resume: bool = False) -> TrainResult:
    """Run (or continue, with `resume`) the recipe until `train.steps`/`epochs` or `train.stop_after`."""
    cfg: TrainConfig = recipe.config.train
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + env.rank)  # the global RNG, for anything outside the seeded data path
    micro, accum = accumulation_steps(cfg.batch_size, cfg.micro_batch, env.world_size)
    length = run_length(cfg, recipe.data.samples_per_epoch)
    total = length.total_steps
    stop = min(total, cfg.stop_after) if cfg.stop_after else total

    model = recipe.model.to(device)
    groups = (recipe.param_groups or default_param_groups)(model, cfg.weight_decay)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.peak_lr, betas=cfg.betas)
    start, wall_before = 0, 0.0
    if resume:
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        # each rank continues its own global RNG stream when the world size is unchanged
        per_rank = state.get("rng_ranks") or []
        restore_rng(per_rank[env.rank] if len(per_rank) == env.world_size else state["rng"])
        start, wall_before = int(state["step"]), float(state.get("wall_s", 0.0))
    ddp_model = wrap(model, env, device)

    log = RunLog(out_dir, env.is_main, resume_step=start if resume else None, tensorboard=cfg.tensorboard)
    micros = accum * env.world_size
    slots = (
        Slot(step, a * env.world_size + env.rank, micro, micros) for step in range(start, stop) for a in range(accum)
    )
    batches = _batches(recipe.data, slots, cfg.prefetch)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    bar = _progress(total, start, enabled=env.is_main and cfg.progress, desc=f"{recipe.method} {out_dir.name}")

    written = 0
    probe_every = cfg.probe_every if recipe.probe is not None else 0
    probing = env.is_main and probe_every > 0  # only rank 0 probes; the others wait at the next all-reduce
    probe_s = 0.0  # this process's probe time (part of wall_s, not of sec_per_step)
    probe_postfix: dict[str, str] = {}  # the last probe's numbers, shown next to the last loss and lr
    bar_loss: dict[str, str] = {}

    def run_probe(at: int) -> tuple[dict[str, float] | None, float]:
        nonlocal probe_s, probing
        t = time.perf_counter()
        model.eval()
        try:
            with torch.no_grad(), autocast:
                out = dict(recipe.probe(model, at))
        except Exception as exc:  # noqa: BLE001 - a broken probe must not end an hour-long run
            probing = False
            print(f"{recipe.method}: probe at step {at} failed ({type(exc).__name__}: {exc}); probes are off for "
                  f"the rest of this run", file=sys.stderr)
            dt = time.perf_counter() - t
            probe_s += dt
            return None, dt
        finally:
            model.train()
        dt = time.perf_counter() - t
        probe_s += dt
        out["probe/seconds"] = round(dt, 3)
        if at > start:
            out["probe/share"] = round(probe_s / max(train_s + window_s + probe_s, 1e-9), 4)
        probe_postfix.clear()
        probe_postfix.update(probe_summary(out))
        return out, dt

    def checkpoint(done: int, wall: float) -> None:
        nonlocal written
        rngs = gather_objects(rng_state(), env)  # collective: every rank reaches this step together
        if env.is_main:
            written += 1
            save_checkpoint(ckpt_path, {
                **recipe.export(model),
                "method": recipe.method,
                "config": to_dict(recipe.config),
                "step": done,
                "total_steps": total,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"name": "warmup_cosine", "peak_lr": cfg.peak_lr, "min_lr": cfg.min_lr,
                              "warmup_steps": length.warmup_steps, "total_steps": total},
                "rng": rngs[0],
                **({"rng_ranks": rngs} if env.enabled else {}),
                "data": {"samples_seen": done * cfg.batch_size, "epoch": done / length.steps_per_epoch,
                         "micro_batch": micro, "accumulation": accum},
                "world_size": env.world_size,
                "wall_s": wall,
            })
        barrier(env)

    model.train()
    sums: dict[str, Tensor] = {}
    window_s, window_steps, train_s = 0.0, 0, 0.0
    done = start
    micro_batches = 0
    try:
        if probing and start == 0 and stop > 0:
            out, _ = run_probe(0)
            if out:
                log.write({"step": 0, "epoch": 0.0, **out, "wall_s": round(probe_s, 2)})
                bar.set_postfix(probe_postfix, refresh=False)
        for step in range(start, stop):
            t0 = time.perf_counter()
            lr = warmup_cosine_lr(step, total, length.warmup_steps, cfg.peak_lr, cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for a in range(accum):
                batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
                with no_sync(ddp_model, a < accum - 1), autocast:
                    loss, stats = ddp_model(batch)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at step {step}; lower train.base_lr, raise train.warmup_*, "
                        f"or use train.precision=fp32 (resume from {ckpt_path} keeps the finished steps)"
                    )
                (loss / accum).backward()
                micro_batches += 1
                for k, v in {"loss": loss, **stats}.items():
                    sums[k] = sums.get(k, 0.0) + v.detach().float() / accum
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad) if cfg.clip_grad > 0 else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            extra = recipe.after_step(model, step, total) if recipe.after_step else {}
            done = step + 1
            window_steps += 1
            probe_out, probe_dt = None, 0.0
            if probing and (done % probe_every == 0 or done == stop):
                probe_out, probe_dt = run_probe(done)

            if done % cfg.log_every == 0 or done == stop:
                names = sorted(sums)
                means = all_reduce_mean(torch.stack([sums[k] for k in names]) / window_steps, env).tolist()
                window_s += time.perf_counter() - t0 - probe_dt
                record = {"step": done, "epoch": round(done / length.steps_per_epoch, 4), **dict(zip(names, means)),
                          "lr": lr, **extra, "world_size": env.world_size}
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                record["sec_per_step"] = window_s / window_steps
                record["clips_per_s"] = window_steps * cfg.batch_size / window_s
                record["wall_s"] = round(wall_before + train_s + window_s + probe_s, 2)
                log.write({**record, **(probe_out or {})})
                bar_loss = {"loss": f"{record['loss']:.4f}", "lr": f"{lr:.2e}"}
                bar.set_postfix({**bar_loss, **probe_postfix}, refresh=False)
                train_s += window_s
                sums, window_s, window_steps = {}, 0.0, 0
            else:
                window_s += time.perf_counter() - t0 - probe_dt
                if probe_out:
                    log.write({"step": done, "epoch": round(done / length.steps_per_epoch, 4), **probe_out,
                               "wall_s": round(wall_before + train_s + window_s + probe_s, 2)})
                    bar.set_postfix({**bar_loss, **probe_postfix}, refresh=False)
            bar.update(1)
            if done % cfg.checkpoint_every == 0 or done == stop:
                checkpoint(done, wall_before + train_s + window_s + probe_s)
    finally:
        batches.close()
        bar.close()
        log.close()

    plot = None
    if env.is_main:
        plot = plot_loss(read_log(log.path), out_dir / "loss.png", title=f"{recipe.method} {out_dir.name}")
    return TrainResult(ckpt_path, done, total, log.path, plot, wall_before + train_s + window_s + probe_s,
                       env.rank, env.world_size, micro_batches, micro, written)


def probe_summary(out: dict[str, float]) -> dict[str, str]:
    """The few probe numbers the progress bar shows: RankMe of the online encoder, the margin of the
    model's loss below the lowest trivial floor (> 0: it beats them all) and the first kNN accuracy
    against its step-0 value."""
    shown = {}
    if "probe/rankme_online" in out:
        shown["rank"] = f"{out['probe/rankme_online']:.1f}"
    if "probe/floor_margin" in out:
        shown["margin"] = f"{out['probe/floor_margin']:+.3f}"
    knn = sorted(k for k in out if k.startswith("probe/knn_") and not k.endswith("_step0"))
    if knn and f"{knn[0]}_step0" in out:
        shown["knn"] = f"{out[knn[0]]:.2f}/{out[knn[0] + '_step0']:.2f}"
    return shown


def _progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm import tqdm

    # mininterval keeps a redirected log (nohup) from filling with carriage returns
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step", mininterval=10.0,
                dynamic_ncols=True, smoothing=0.05)
