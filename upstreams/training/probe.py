"""Metrics that show, while pretraining runs, whether a self-supervised run learns or collapses.

The training loss alone cannot say it. For M2D (2 - 2 cos between predicted and target tokens over
the masked patches) outputs that ignore the audio already score well below 2, because targets share
a common direction and depend on their position: on the 192-d mini encoder with 16x4 patches one
constant vector scores 0.26-0.34, the per-position mean target 0.16-0.21 and a copy of a neighbour
in time 0.12-0.15, while the whole mini run ends near 0.12. So the probe logs, on fixed data:

- `rankme`: the effective rank of an embedding matrix (how many directions the features use);
  a collapsing encoder loses rank long before its loss says anything;
- `constant_floor`, `position_floor`, `neighbour_floor`: the loss of three trivial predictors
  computed against the *current* targets, so that the model's own loss on the same batch can be read
  against them (it must fall below all three for the predictor to use the audio);
- `knn_accuracy`: a label-based check of the features that needs no training (leave-one-out kNN),
  read against the same number for the run's step-0 weights.

Everything here is a pure function of tensors (no model, no files) so that it can be tested on
constructed data; `upstreams.m2d.pretrain.M2DProbe` feeds it from a training run.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["rankme", "standardise_targets", "cosine_distance", "constant_floor", "position_floor",
           "nearest_visible", "neighbour_floor", "knn_accuracy"]


# -- effective rank --------------------------------------------------------------------------------
def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., ICML 2023): exp of the entropy of the L1-normalised singular values.

    `z` is `[N, D]` (one embedding per row). With p_k = s_k / sum(s) + eps, RankMe = exp(-sum p_k log p_k):
    1 for a rank-1 matrix, min(N, D) when every singular value is equal. As in the paper the rows are
    neither centred nor normalised (a shared mean direction counts as one direction), and the
    estimate needs N well above D to reach D. Computed in float64 from the eigenvalues of the smaller
    Gram matrix, which is exact enough there and cheap for N >> D token matrices.
    """
    z = z.detach().double().flatten(0, -2) if z.dim() > 2 else z.detach().double()
    if z.shape[0] == 0 or z.shape[1] == 0:
        return float("nan")
    gram = z.T @ z if z.shape[0] >= z.shape[1] else z @ z.T
    s = torch.linalg.eigvalsh(gram).clamp_min(0.0).sqrt()
    total = s.sum()
    if not torch.isfinite(total) or total <= 0:
        return float("nan")
    p = s / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


# -- trivial-solution floors -----------------------------------------------------------------------
def standardise_targets(target: Tensor) -> Tensor:
    """The M2D target as the loss sees it: per-token layer norm (no affine, eps 1e-6), float32.

    Same as `upstreams.m2d.model.m2d_loss` (restated here so that `training` does not import `m2d`).
    """
    return F.layer_norm(target.float(), target.shape[-1:], eps=1e-6)


def cosine_distance(pred: Tensor, target: Tensor) -> Tensor:
    """2 - 2 cos per token (`[..., D]` -> `[...]`), the M2D loss before its mean."""
    return 2.0 - 2.0 * (F.normalize(pred.float(), dim=-1) * F.normalize(target.float(), dim=-1)).sum(-1)


def _unit_targets(target: Tensor, standardise: bool) -> Tensor:
    t = standardise_targets(target) if standardise else target.float()
    return F.normalize(t.double(), dim=-1)


def constant_floor(target: Tensor, standardise: bool = True) -> float:
    """Loss of the best single vector predicted for every masked token: 2 - 2 |mean of unit targets|.

    `target` `[..., D]`: the target tokens at the masked positions (raw; standardised as the loss does
    unless `standardise=False`). The mean cosine to a unit vector c is c . mean(t_hat), which the mean
    direction maximises, so this is the exact minimum over all constant predictors on this batch.
    """
    t = _unit_targets(target, standardise).reshape(-1, target.shape[-1])
    return float(2.0 - 2.0 * t.mean(0).norm())


def position_floor(target: Tensor, positions: Tensor, num_positions: int, standardise: bool = True) -> float:
    """Loss of the best predictor that sees only the patch position: one vector per position.

    `target` `[B, M, D]` at the masked positions `positions` `[B, M]` (patch indices < `num_positions`).
    Per position the best vector is the mean direction of that position's unit targets, so the loss is
    2 - 2 sum_p |sum of unit targets at p| / (B M): the exact minimum over position-only predictors on
    this batch (fitted in-sample, so slightly optimistic for few clips; never above `constant_floor`).
    The model's predictor receives every position, so this is the first thing it can learn.
    """
    t = _unit_targets(target, standardise).reshape(-1, target.shape[-1])
    pos = positions.reshape(-1).to(t.device)
    sums = torch.zeros(num_positions, t.shape[1], dtype=t.dtype, device=t.device).index_add_(0, pos, t)
    return float(2.0 - 2.0 * sums.norm(dim=1).sum() / t.shape[0])


def nearest_visible(ids_keep: Tensor, ids_mask: Tensor, grid: tuple[int, int]) -> Tensor:
    """For every masked patch, the visible patch nearest in time in the same frequency row.

    Patches are in `(f t)` order over a `grid = (grid_f, grid_t)` grid (index i is row i // grid_t,
    column i % grid_t). Returns `[B, M]` indices into `ids_keep`'s positions (0..K-1). Ties (a visible
    patch on each side) go to the earlier one; a row with no visible patch falls back to the nearest
    row that has one.
    """
    gt = grid[1]
    fm, tm = ids_mask // gt, ids_mask % gt  # [B, M]
    fk, tk = ids_keep // gt, ids_keep % gt  # [B, K]
    dt = (tm[:, :, None] - tk[:, None, :]).abs()
    df = (fm[:, :, None] - fk[:, None, :]).abs()
    cost = df * (gt + 1) + dt  # any patch in the same row beats every patch in another row
    return cost.argmin(dim=2)  # argmin returns the first minimum: the earlier of two tied patches


def neighbour_floor(target: Tensor, source: Tensor, ids_keep: Tensor, ids_mask: Tensor, grid: tuple[int, int],
                    standardise: bool = True) -> float:
    """Loss of copying, for each masked patch, the representation of its nearest visible neighbour in time.

    `target` `[B, M, D]`: targets at the masked patches `ids_mask` `[B, M]`; `source` `[B, L, D]`:
    a representation of every patch (the probe passes the target encoder run on the whole, unmasked
    crop, i.e. what the target of a visible patch looks like); `ids_keep` `[B, K]` the visible patches.
    The copy is standardised as the target is (a per-token layer norm a predictor gets for free).
    Audio is smooth in time, so this local interpolation needs no understanding of the clip and
    usually beats the position floor; a predictor that only copies its neighbours stops here.
    """
    near = torch.gather(ids_keep, 1, nearest_visible(ids_keep, ids_mask, grid))  # [B, M] patch indices
    copied = torch.gather(source.float(), 1, near.unsqueeze(-1).expand(-1, -1, source.shape[-1]))
    if standardise:  # the copy is standardised like the target it stands in for
        copied, target = standardise_targets(copied), standardise_targets(target)
    return float(cosine_distance(copied, target).double().mean())


# -- label probe -----------------------------------------------------------------------------------
def knn_accuracy(features: Tensor, labels: Sequence | Tensor, k: int = 5, center: bool = True) -> float:
    """Leave-one-out cosine kNN accuracy (majority vote of the `k` nearest other items).

    `features` `[N, D]`, `labels` N class ids or names. Features are centred on their own mean first
    (`center`, SimpleShot's CL2N): mean-pooled transformer features share one large common direction
    that would otherwise make every cosine close to 1. Ties in the vote go to the class whose tied
    neighbours are closer in total. Needs no training and no split, so it is cheap enough to run
    every few hundred steps; its absolute value depends on the set, which is why the probe reads it
    against the same number at step 0. Returns nan for fewer than 2 items.
    """
    if not isinstance(labels, Tensor):
        names = {name: i for i, name in enumerate(sorted(set(labels), key=str))}
        labels = torch.tensor([names[x] for x in labels])
    labels = labels.reshape(-1).long()
    x = features.detach().double()
    n = x.shape[0]
    if n < 2:
        return float("nan")
    if center:
        x = x - x.mean(0, keepdim=True)
    x = F.normalize(x, dim=1)
    sim = x @ x.T
    sim.fill_diagonal_(-math.inf)
    k = min(k, n - 1)
    top_sim, top = sim.topk(k, dim=1)
    votes = torch.zeros(n, int(labels.max()) + 1, dtype=torch.float64)
    nb = labels[top]
    votes.scatter_add_(1, nb, torch.ones_like(top_sim))
    # tie-break: add the summed similarity, scaled below one vote
    votes.scatter_add_(1, nb, (top_sim + 1.0) / (2.0 * k + 1.0))
    return float((votes.argmax(1) == labels).double().mean())
