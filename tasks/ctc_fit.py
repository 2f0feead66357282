"""Training loop for CTC heads: duration-budgeted batches, step budget, early stopping on dev.

One loop serves every protocol. What differs is only where a batch's inputs come from:

* `FrameSource`: frame features of a frozen upstream from the embedding cache (memory-mapped
  float16 `[rows, layers, dim]`), all layers or one, padded to `[B, T, L, D]` / `[B, T, D]`;
* `WaveSource`: waveforms read from disk (for fine-tuning, or a frozen upstream run online when
  a corpus is too large to cache), one background thread reading the next batch.

Batches are formed by padded duration (items x longest <= budget), never by count: sorted by a
noisy length so that batches change between epochs while padding stays small, then shuffled.
Training is Adam with gradient clipping at 1 (SUPERB's runner); every `eval_every` steps the dev
split is decoded greedily and scored, the best state is kept, and training stops after `patience`
evaluations without improvement (counted only after `min_steps`: CTC first sits on a plateau where
it emits only blanks, and stopping there says nothing about the features) or at `max_steps`. All
randomness comes from `seed`.
"""

from __future__ import annotations

import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from upstreams.batching import batches_by_duration

from .ctc import ctc_loss, greedy_decode
from .datasets.base import AudioExample

__all__ = ["CTCBudget", "FrameSource", "WaveSource", "training_batches", "CTCFitResult", "fit_ctc", "decode"]


@dataclass(frozen=True)
class CTCBudget:
    max_steps: int
    eval_every: int  # steps between dev evaluations
    patience: int  # dev evaluations without improvement before stopping
    batch_seconds: float  # padded audio seconds per training batch
    min_steps: int = 0  # warm-up: no early stopping before this step (evaluations before it count for nothing)

    def as_dict(self) -> dict:
        return {"max_steps": self.max_steps, "eval_every": self.eval_every, "patience": self.patience,
                "batch_seconds": self.batch_seconds, "min_steps": self.min_steps}


class FrameSource:
    """Batches of cached frame features for the utterances at `rows` of a cache entry.

    Args:
        features: `[rows, layers, dim]` float16 memory map; index: `[examples, 2]` (start, rows).
        rows: cache example index of each utterance of this split, in split order.
        layer: None for all layers (`[B, T, L, D]`), else that layer (`[B, T, D]`).
    """

    def __init__(self, features: np.ndarray, index: np.ndarray, rows: Sequence[int], layer: int | None = None):
        self.features, self.layer = features, layer
        self.spans = [tuple(int(v) for v in index[r]) for r in rows]

    def __len__(self) -> int:
        return len(self.spans)

    def lengths(self) -> list[int]:
        return [n for _, n in self.spans]

    def __call__(self, idx: Sequence[int]) -> tuple[Tensor, Tensor]:
        lengths = torch.tensor([self.spans[i][1] for i in idx])
        parts = []
        for i in idx:
            start, n = self.spans[i]
            rows = self.features[start : start + n]
            block = rows if self.layer is None else rows[:, self.layer]
            parts.append(torch.from_numpy(np.asarray(block, dtype=np.float32)))
        return torch.nn.utils.rnn.pad_sequence(parts, batch_first=True), lengths

    def iter_layer_chunks(self, layer: int, rows_per_chunk: int = 65536) -> Iterator[np.ndarray]:
        """float32 `[n, dim]` chunks of one layer over all frames of this split (for statistics)."""
        for start, n in self.spans:
            for a in range(0, n, rows_per_chunk):
                yield np.asarray(self.features[start + a : start + min(n, a + rows_per_chunk), layer], dtype=np.float32)


class WaveSource:
    """Batches of waveforms (lists of 1-D float tensors at `sample_rate`) read on demand."""

    def __init__(self, examples: Sequence[AudioExample], sample_rate: int):
        self.examples, self.sample_rate = list(examples), int(sample_rate)
        self._lengths = [max(1, int(round(e.duration() * sample_rate))) for e in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def lengths(self) -> list[int]:
        """Lengths in samples (batch budgets are in samples for this source)."""
        return self._lengths

    def __call__(self, idx: Sequence[int]) -> tuple[list[Tensor]]:
        return ([self.examples[i].load(self.sample_rate) for i in idx],)


def training_batches(lengths: Sequence[int], max_padded: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of batches: sort by length x U(0.8, 1.2), cut at `max_padded`, shuffle the batches."""
    noisy = np.asarray(lengths, dtype=np.float64) * rng.uniform(0.8, 1.2, len(lengths))
    order = np.argsort(-noisy, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order.tolist():
        new_longest = max(longest, lengths[i])
        if current and new_longest * (len(current) + 1) > max_padded:
            batches.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return [batches[k] for k in rng.permutation(len(batches))]


def _prefetched(source, batches: Sequence[Sequence[int]]) -> Iterator[tuple[Sequence[int], tuple]]:
    """(indices, inputs) per batch, reading batch k+1 in a thread while batch k is used."""
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(source, batches[0])
        for k, idx in enumerate(batches):
            inputs = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(source, batches[k + 1])
            yield idx, inputs


def _as_tuple(inputs) -> tuple:
    return inputs if isinstance(inputs, tuple) else (inputs,)


@torch.no_grad()
def decode(model: nn.Module, source, max_padded: int, decoder: Callable = greedy_decode,
           targets: Sequence[Sequence[int]] | None = None) -> tuple[list[list[int]], float | None]:
    """Label ids per utterance of `source`, in its order (eval mode, batches by duration), and the
    CTC loss per utterance averaged over `source` when `targets` are given (else None)."""
    model.eval()
    out: list[list[int]] = [[] for _ in range(len(source))]
    total = 0.0
    for idx, inputs in _prefetched(source, batches_by_duration(source.lengths(), max_padded)):
        logits, lengths = model(*_as_tuple(inputs))
        for i, ids in zip(idx, decoder(logits, lengths)):
            out[i] = ids
        if targets is not None:
            total += float(ctc_loss(logits, lengths, [targets[i] for i in idx])) * len(idx)
    return out, (total / len(source) if targets is not None else None)


@dataclass
class CTCFitResult:
    state: dict
    best_step: int
    dev: dict  # dev metrics of the best step, e.g. {"wer": 31.2, "cer": 12.0}
    rank: tuple  # what selected it (lower is better)
    steps_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)  # {"step", "train_loss", "dev_<metric>"...}


def fit_ctc(
    model: nn.Module,
    train: FrameSource | WaveSource,
    train_targets: Sequence[Sequence[int]],
    evaluate: Callable[[nn.Module], dict],
    rank: Callable[[dict], tuple],
    param_groups: list[dict],
    budget: CTCBudget,
    max_padded: int,
    seed: int = 0,
    grad_clip: float = 1.0,
    progress: str | None = None,
) -> CTCFitResult:
    """Train `model` with CTC on `train`; keep the state whose dev metrics rank lowest.

    Args:
        train_targets: label ids of every training utterance, in `train`'s order.
        evaluate: dev metrics of the current model, e.g. `{"wer": .., "cer": ..}`.
        rank: sort key of those metrics, lower is better (e.g. WER, then CER to break ties).
        param_groups: Adam parameter groups, each with its own "lr".
        max_padded: training batch budget in `train.lengths()` units (frames or samples).
    """
    if len(train_targets) != len(train):
        raise ValueError(f"{len(train_targets)} targets for {len(train)} training utterances")
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(param_groups)
    params = [p for g in param_groups for p in g["params"]]
    best = CTCFitResult(copy.deepcopy(model.state_dict()), 0, {}, (math.inf,), 0, 0.0)
    t0, step, bad, losses = time.perf_counter(), 0, 0, []
    bar = tqdm(total=budget.max_steps, desc=progress, disable=progress is None, leave=False)
    lengths = train.lengths()
    stop = False
    while not stop:
        model.train()
        for idx, inputs in _prefetched(train, training_batches(lengths, max_padded, rng)):
            logits, out_lengths = model(*_as_tuple(inputs))
            loss = ctc_loss(logits, out_lengths, [train_targets[i] for i in idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % budget.eval_every == 0 or step == budget.max_steps:
                metrics = evaluate(model)
                model.train()
                best.history.append({"step": step, "train_loss": round(float(np.mean(losses)), 4),
                                     **{f"dev_{k}": round(v, 4) for k, v in metrics.items()}})
                losses = []
                key = rank(metrics)
                if key < best.rank:
                    best.state, best.best_step = copy.deepcopy(model.state_dict()), step
                    best.dev, best.rank = metrics, key
                    bad = 0
                elif step > budget.min_steps:  # patience is counted only after the warm-up
                    bad += 1
                bar.set_postfix(dev=f"{key[0]:.1f}", best=f"{best.rank[0]:.1f}")
                if bad >= budget.patience or step >= budget.max_steps:
                    stop = True
                    break
    bar.close()
    model.load_state_dict(best.state)
    best.steps_run, best.seconds = step, round(time.perf_counter() - t0, 2)
    return best
