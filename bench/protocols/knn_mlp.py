"""`knn` (X-ARES) and `mlp` (HEAR 2021) evaluation of clip tasks on cached, time-mean features of one layer.

Both read the embedding cache entry that `linear` and `weighted` use (`entry.pooled()`: no extraction of
their own), select on validation only and score the selected configuration on test, fold by fold.

`knn`: nothing is learned. Features of one layer (`--layer`, default last) are L2-normalised as X-ARES
does, so the dot product is the cosine similarity; they are not standardised first. We tried z-scoring on
the training split first (the linear protocol's scaler; `run_knn(standardize=True)`): on the mini
benchmark's validation splits it won on 2 of 6 (upstream, task) cells (fbank and random on ESC-50), lost on
3 (ICBHI both, fbank Speech Commands, by 1.6 to 3.8 points), tied on 1 - no case for leaving X-ARES's recipe.
Each validation / test clip takes the majority label of its k most similar training clips; a tie between
classes goes to the tied class of the most similar neighbour (the vote is not weighted by similarity, so
for every clip without a tie the prediction is scikit-learn's `KNeighborsClassifier(metric="cosine")`).
k is chosen from `KNN_KS` (values above the training-set size are dropped) by the mean validation score over
folds, the smaller k winning ties; only the chosen k is scored on test. Deterministic: one run whatever
`--seeds` says. No class balancing: the vote favours frequent classes (ICBHI's "normal" cycles).

`mlp`: HEAR 2021's downstream predictor (`tasks.heads.MLPHead`: 1 or 2 hidden layers of 1024, BatchNorm,
dropout 0.1, ReLU) on features standardised on the training split (HEAR feeds raw embeddings; standardising
matches our linear protocol and makes the lr grid mean the same thing for every upstream), Adam +
cross-entropy, early stopping on validation with the frozen-protocol budget (`budget_for`). HEAR's grid
(hidden layers {1, 2} x lr {3.2e-3, 1e-3, 3.2e-4, 1e-4} x init {xavier_uniform, xavier_normal}) has 16
points, of which 8 are drawn as hear-eval-kit draws them, with its fixed seed 42 (`GRID_SEED`, independent
of the head seed, so every head seed trains the same 8). Every drawn point is trained on every fold and the
point with the best mean validation score wins (HEAR selects on the first split only and retrains the
winner on the others; we select on all folds, like our other protocols).
"""

from __future__ import annotations

import itertools
import random
import time

import numpy as np
import torch

from tasks.clip_tasks import ClipTask
from tasks.fit import balanced_weights, fit_features, predict_features
from tasks.heads import MLPHead
from tasks.metrics.classification import per_class_accuracy

from .clip_heads import Budget, Outcome, grid_scores, summarise_grid

__all__ = ["KNN_KS", "MLP_GRID", "MLP_GRID_POINTS", "GRID_SEED", "knn_predict", "mlp_grid", "run_knn", "run_mlp"]

KNN_KS = (1, 3, 5, 10, 20, 50)
# axes in the order sklearn's ParameterGrid (hear-eval-kit) enumerates them: sorted names, the last varying fastest
MLP_GRID = {"hidden_layers": (1, 2), "init": ("xavier_uniform", "xavier_normal"), "lr": (3.2e-3, 1e-3, 3.2e-4, 1e-4)}
MLP_GRID_POINTS = 8  # HEAR 2021 trains 8 of the 16 grid points
MLP_HIDDEN_DIM, MLP_DROPOUT = 1024, 0.1
GRID_SEED = 42  # hear-eval-kit: seed_everything(42), then random.shuffle of the grid, first 8 points


def _layer_features(pooled: np.ndarray, layer: int) -> np.ndarray:
    n_layers = pooled.shape[1]
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range for an upstream with {n_layers} layers")
    return np.asarray(pooled[:, layer], dtype=np.float64)


def _standardise(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """z-score with the training split's statistics (EVAR's StandardScaler)."""
    mean, std = x[train].mean(0), x[train].std(0)
    return (x - mean) / np.maximum(std, 1e-8)


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, ks, num_classes: int) -> dict:
    """{k: predicted labels} of a cosine kNN, majority vote, class ties broken by the most similar neighbour.

    Features need not be normalised (they are L2-normalised here); neighbours are ordered by decreasing
    cosine similarity, equal similarities by training index."""
    train_y = np.asarray(train_y)
    sims = _l2(np.asarray(query_x, dtype=np.float64)) @ _l2(np.asarray(train_x, dtype=np.float64)).T
    kmax = max(ks)
    if kmax > len(train_y):
        raise ValueError(f"k = {kmax} exceeds the {len(train_y)} training examples")
    order = np.argsort(-sims, axis=1, kind="stable")[:, :kmax]
    neighbours = train_y[order]  # [queries, kmax] labels, most similar first
    rows = np.arange(len(neighbours))
    out = {}
    for k in ks:
        nb = neighbours[:, :k]
        counts = np.zeros((len(nb), num_classes), dtype=np.int64)
        np.add.at(counts, (np.repeat(rows, k), nb.ravel()), 1)
        tied = counts == counts.max(1, keepdims=True)
        first = np.argmax(tied[rows[:, None], nb], axis=1)  # the most similar neighbour of a tied class
        out[k] = nb[rows, first]
    return out


def _scored(task: ClipTask, idx: np.ndarray, pred: np.ndarray) -> dict:
    tm = task.score_fn(task.labels[idx], pred)
    return {"test": tm["score"], "test_metrics": tm,
            "per_class": per_class_accuracy(task.labels[idx], pred, task.classes)}


def run_knn(task: ClipTask, pooled: np.ndarray, layer: int = -1, ks=KNN_KS, standardize: bool = False) -> Outcome:
    """`pooled`: `[examples, layers, dim]` time-mean features from the embedding cache."""
    t0 = time.perf_counter()
    feats = _layer_features(pooled, layer)
    n_train = min(len(f.train) for f in task.folds)
    ks = tuple(k for k in ks if k <= n_train) or (n_train,)
    prepared = {f.name: _standardise(feats, f.train) if standardize else feats for f in task.folds}
    runs = {}
    for fold in task.folds:  # validation: every k
        x = prepared[fold.name]
        preds = knn_predict(x[fold.train], task.labels[fold.train], x[fold.valid], ks, len(task.classes))
        for i, k in enumerate(ks):
            runs[(i, fold.name)] = {"val": task.score_fn(task.labels[fold.valid], preds[k])["score"], "k": k}
    points = [{"k": k} for k in ks]
    chosen = ks[grid_scores(task, points, runs)[1]]
    for fold in task.folds:  # test: the chosen k only
        x = prepared[fold.name]
        pred = knn_predict(x[fold.train], task.labels[fold.train], x[fold.test], (chosen,), len(task.classes))[chosen]
        runs[(ks.index(chosen), fold.name)].update(_scored(task, fold.test, pred))
    criterion = (f"mean validation {task.metric} over folds; k in {list(ks)} (k <= training-set size), smaller k "
                 f"wins ties; layer {layer}")
    out = summarise_grid(task, points, runs, criterion, extra_fold_keys=("k",))
    out.lr = None
    out.details.update({
        "layer": layer, "k": chosen, "standardized": standardize,
        "knn": "cosine similarity on L2-normalised features" + (" standardised on the training split" if standardize
                                                                 else "") + "; majority vote of the k most similar "
               "training clips, class ties to the tied class of the most similar neighbour",
        "deterministic": True, "knn_seconds": round(time.perf_counter() - t0, 3),
    })
    if task.balanced_sampling:  # the trained protocols' class-balanced sampling has no kNN counterpart here
        out.details["class_balance"] = "none: every training clip votes with weight 1"
    return out


def mlp_grid(lrs=None, points: int = MLP_GRID_POINTS, seed: int = GRID_SEED) -> tuple[list[dict], int]:
    """(the drawn grid points, in draw order; the full grid's size). Drawn as hear-eval-kit draws them: the
    grid in ParameterGrid order, shuffled by Python's `random` seeded with 42, the first 8 kept (HEAR's own
    8, as long as nothing else drew from `random` there in between). `lrs` replaces the lr axis."""
    axes = {**MLP_GRID, **({"lr": tuple(lrs)} if lrs else {})}
    full = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    shuffled = list(full)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:points], len(full)


def run_mlp(task: ClipTask, pooled: np.ndarray, lrs=None, seed: int = 0, layer: int = -1,
            budget: Budget = Budget(200, 20, 128), progress: bool = True) -> Outcome:
    """HEAR's MLP grid on `[examples, layers, dim]` time-mean features; see the module docstring."""
    points, full_size = mlp_grid(lrs)
    y = torch.as_tensor(task.labels)
    feats = _layer_features(pooled, layer)
    runs, batch_sizes = {}, []
    for fold in task.folds:
        x = torch.as_tensor(_standardise(feats, fold.train), dtype=torch.float32)
        weights = balanced_weights(task.labels[fold.train]) if task.balanced_sampling else None
        # BatchNorm cannot train on a final batch of one example
        bs = budget.batch_size + (len(fold.train) % budget.batch_size == 1)
        batch_sizes.append(bs)
        for i, p in enumerate(points):
            torch.manual_seed(seed)
            head = MLPHead(x.shape[1], len(task.classes), p["hidden_layers"], MLP_HIDDEN_DIM, MLP_DROPOUT, p["init"])
            res = fit_features(head, x[fold.train], y[fold.train], x[fold.valid], y[fold.valid], task.score_fn,
                               p["lr"], budget.max_epochs, budget.patience, bs, seed, weights,
                               progress=(f"{task.name} mlp {fold.name} {p['hidden_layers']}x{MLP_HIDDEN_DIM} "
                                         f"lr={p['lr']:g} {p['init']}") if progress else None)
            pred = predict_features(head, x[fold.test]).argmax(1).numpy()
            runs[(i, fold.name)] = {"val": res.val_score, "best_epoch": res.best_epoch,
                                    "epochs_run": len(res.history), **_scored(task, fold.test, pred)}
    criterion = (f"mean validation {task.metric} over folds, best epoch per (grid point, fold); {len(points)} of "
                 f"{full_size} grid points drawn with seed {GRID_SEED}; layer {layer}")
    out = summarise_grid(task, points, runs, criterion, extra_fold_keys=("best_epoch", "epochs_run"))
    out.selection.update({"grid_full_size": full_size, "grid_sampled": len(points), "grid_seed": GRID_SEED,
                          "grid_axes": {k: list(v) for k, v in {**MLP_GRID, **({"lr": tuple(lrs)} if lrs else {})}
                                        .items()}})
    out.details.update({"layer": layer, "standardized": True, "batch_size": sorted(set(batch_sizes)),
                        "head": f"MLPHead: hidden {MLP_HIDDEN_DIM}, BatchNorm1d, dropout {MLP_DROPOUT}, ReLU "
                                "(hear-eval-kit 2021 grid)"})
    return out
