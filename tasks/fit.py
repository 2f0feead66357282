"""Training loops for classification heads: early stopping on validation, best weights restored.

`fit_features` trains a head on cached features (linear / weighted protocols); `fit_finetune`
trains an upstream + head on waveforms with separate learning rates. Both select the epoch on the
validation split only and return every epoch's validation score, so records can show how the
choice was made. Randomness (initialisation, shuffling, sampling) comes from `seed` alone.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from upstreams.threads import torch_threads

__all__ = ["FitResult", "fit_features", "fit_finetune", "predict_features", "predict_waveforms", "balanced_weights",
           "single_threaded"]

ScoreFn = Callable[[np.ndarray, np.ndarray], dict]


@dataclass
class FitResult:
    state: dict
    best_epoch: int
    val_score: float
    val_metrics: dict
    history: list[dict] = field(default_factory=list)


def single_threaded():
    """Heads on cached features train with one intra-op thread: see `upstreams.threads`."""
    return torch_threads(1)


def balanced_weights(labels: Sequence[int]) -> np.ndarray:
    """Per-example sampling weights that make every class equally likely (SUPERB KS's sampler)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    return 1.0 / counts[labels]


def _epoch_order(n: int, gen: torch.Generator, weights: np.ndarray | None) -> Tensor:
    if weights is None:
        return torch.randperm(n, generator=gen)
    w = torch.as_tensor(weights, dtype=torch.double)
    return torch.multinomial(w, n, replacement=True, generator=gen)


@torch.no_grad()
def predict_features(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _improved(score: float, best: float) -> bool:
    return score > best + 1e-12


def fit_features(
    model: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    x_valid: Tensor,
    y_valid: Tensor,
    score_fn: ScoreFn,
    lr: float,
    max_epochs: int = 200,
    patience: int = 20,
    batch_size: int = 128,
    seed: int = 0,
    sample_weights: np.ndarray | None = None,
    progress: str | None = None,
) -> FitResult:
    """Adam + cross-entropy on features; early stopping on the validation score (higher is better)."""
    with single_threaded():
        return _fit_features(model, x_train, y_train, x_valid, y_valid, score_fn, lr, max_epochs, patience,
                             batch_size, seed, sample_weights, progress)


def _fit_features(model, x_train, y_train, x_valid, y_valid, score_fn, lr, max_epochs, patience, batch_size, seed,
                  sample_weights, progress) -> FitResult:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best = FitResult(copy.deepcopy(model.state_dict()), 0, -math.inf, {})
    bad = 0
    bar = tqdm(range(1, max_epochs + 1), desc=progress, disable=progress is None, leave=False)
    for epoch in bar:
        model.train()
        order = _epoch_order(len(x_train), gen, sample_weights)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        pred = predict_features(model, x_valid).argmax(1).numpy()
        metrics = score_fn(y_valid.numpy(), pred)
        best.history.append({"epoch": epoch, "loss": round(total / len(order), 5), "val": round(metrics["score"], 5)})
        if _improved(metrics["score"], best.val_score):
            best.state, best.best_epoch, best.val_score, best.val_metrics = (
                copy.deepcopy(model.state_dict()), epoch, metrics["score"], metrics)
            bad = 0
        else:
            bad += 1
            if bad >= patience:
                break
        bar.set_postfix(val=f"{metrics['score']:.3f}", best=f"{best.val_score:.3f}")
    model.load_state_dict(best.state)
    return best


@torch.no_grad()
def predict_waveforms(model: nn.Module, wavs: Sequence[Tensor], batches: Sequence[Sequence[int]],
                      autocast=None) -> Tensor:
    model.eval()
    out = torch.zeros(len(wavs), model.linear.out_features)
    for idx in batches:
        with autocast() if autocast else contextlib.nullcontext():
            logits = model([wavs[i] for i in idx])
        out[list(idx)] = logits.float().cpu()
    return out


def fit_finetune(
    model: nn.Module,
    wavs_train: Sequence[Tensor],
    y_train: Tensor,
    wavs_valid: Sequence[Tensor],
    y_valid: Tensor,
    valid_batches: Sequence[Sequence[int]],
    score_fn: ScoreFn,
    lr: float,
    upstream_lr_scale: float = 0.1,
    max_epochs: int = 30,
    patience: int = 5,
    batch_size: int = 16,
    seed: int = 0,
    sample_weights: np.ndarray | None = None,
    autocast=None,
    progress: str | None = None,
) -> FitResult:
    """AdamW over head (lr) and upstream (lr x upstream_lr_scale); cosine decay; early stopping on validation."""
    gen = torch.Generator().manual_seed(seed)
    up_params = list(model.upstream.parameters())
    up_ids = {id(p) for p in up_params}
    head_params = [p for p in model.parameters() if id(p) not in up_ids]
    opt = torch.optim.AdamW(
        [{"params": head_params, "lr": lr}, {"params": up_params, "lr": lr * upstream_lr_scale}], weight_decay=0.01
    )
    steps_per_epoch = math.ceil(len(wavs_train) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs * steps_per_epoch)
    best = FitResult(copy.deepcopy(model.state_dict()), 0, -math.inf, {})
    bad = 0
    bar = tqdm(range(1, max_epochs + 1), desc=progress, disable=progress is None, leave=False)
    for epoch in bar:
        model.train()
        order = _epoch_order(len(wavs_train), gen, sample_weights).tolist()
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            with autocast() if autocast else contextlib.nullcontext():
                logits = model([wavs_train[j] for j in idx])
            loss = nn.functional.cross_entropy(logits.float(), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        pred = predict_waveforms(model, wavs_valid, valid_batches, autocast).argmax(1).numpy()
        metrics = score_fn(y_valid.numpy(), pred)
        best.history.append({"epoch": epoch, "loss": round(total / len(order), 5), "val": round(metrics["score"], 5)})
        if _improved(metrics["score"], best.val_score):
            best.state, best.best_epoch, best.val_score, best.val_metrics = (
                copy.deepcopy(model.state_dict()), epoch, metrics["score"], metrics)
            bad = 0
        else:
            bad += 1
            if bad >= patience:
                break
        bar.set_postfix(val=f"{metrics['score']:.3f}", best=f"{best.val_score:.3f}")
    model.load_state_dict(best.state)
    return best
