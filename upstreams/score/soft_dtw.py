"""Soft-DTW (Cuturi & Blondel, ICML 2017) for batches of variable-length sequences, and SCORE's loss.

    R[0, 0] = 0,  R[i, 0] = R[0, j] = inf
    R[i, j] = C[i-1, j-1] + softmin_gamma(R[i-1, j-1], R[i-1, j], R[i, j-1])
    softmin_gamma(a, b, c) = -gamma * log(exp(-a/gamma) + exp(-b/gamma) + exp(-c/gamma))
    sdtw(x, y) = R[n, m],  C[i, j] = |x_i - y_j|^2

Why a wavefront: R[i, j] needs its left, upper and upper-left neighbours, so all cells of one
anti-diagonal (i + j = k) are independent. R is kept "skewed", `r[b, k, i] = -R[i, k - i] / gamma`,
which makes the three predecessors of a whole diagonal three contiguous slices of the previous
two diagonals; each diagonal is then one `logsumexp` over the batch, and a pair of lengths
(n, m) costs n + m - 1 vectorised steps instead of n m scalar ones.

Why an explicit backward: autograd through n + m small steps would store every intermediate.
The gradient of R[n, m] with respect to the cost matrix is Cuturi & Blondel's E matrix, computed
by the reverse wavefront E[i, j] = sum over the successors s of E[s] exp((R[s] - R[i, j] - C[s]) /
gamma) (Algorithm 2 of the paper; Maghoumi's pytorch-softdtw-cuda computes the same). Here it is
done in the log domain on F = E exp(R / gamma), for which the recursion loses R altogether,
log F[i, j] = logsumexp_s(log F[s] - C[s] / gamma) (the backward half of a forward-backward pass;
E is the probability that the soft alignment passes through a cell), so nothing overflows
whatever the sequence length or gamma and each diagonal costs one `logsumexp`.

Variable lengths: cell (i, j) only depends on cells up and to the left, so padded frames never
change R inside an item's own n_b x m_b rectangle; the value is read at (n_b, m_b) and the
backward masks every cell outside the rectangle.

SCORE (Meghanani & Hain, ICASSP 2024; Trikaldarshi/SCORE_Finetuning, `expert.py`): projected,
L2-normalised frames, `SoftDTW(gamma=0.1)` with squared Euclidean costs (Maghoumi's default),
divergence `sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2`, then `.mean() / (x.shape[1] +
y.shape[1])` with batch size 1 ("tested only for batch size 1"). `score_loss` divides each item
by its own `len_x + len_y`: the same for batch size 1, and the per-item reading for larger
batches (SCORE's code would divide by padded lengths and run the DTW over padding frames).
"""

from __future__ import annotations

import contextlib
import math

import torch

from ..threads import torch_threads
from torch.autograd.function import once_differentiable

__all__ = [
    "pairwise_squared_euclidean",
    "soft_dtw",
    "soft_dtw_from_costs",
    "soft_dtw_divergence",
    "score_loss",
]

DEFAULT_GAMMA = 0.1  # SCORE's value


def pairwise_squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`(B, N, D), (B, M, D) -> (B, N, M)` with `|x_i|^2 + |y_j|^2 - 2 x_i.y_j`, clamped at 0.

    The expansion needs one batched matmul instead of a `(B, N, M, D)` difference tensor.
    """
    xx = x.square().sum(-1).unsqueeze(-1)
    yy = y.square().sum(-1).unsqueeze(-2)
    return torch.baddbmm(xx + yy, x, y.transpose(-1, -2), alpha=-2.0).clamp_min(0.0)


def soft_dtw_from_costs(
    costs: torch.Tensor,
    x_lengths: torch.Tensor | None = None,
    y_lengths: torch.Tensor | None = None,
    gamma: float = DEFAULT_GAMMA,
) -> torch.Tensor:
    """Soft-DTW value of each item from its (padded) cost matrix.

    Args:
        costs: `(B, N, M)`; only `costs[b, :x_lengths[b], :y_lengths[b]]` is used.
        x_lengths, y_lengths: `(B,)` ints >= 1; default N and M.
        gamma: smoothing > 0 (gamma -> 0 gives DTW).
    Returns:
        `(B,)` values, differentiable with respect to `costs`.
    """
    if costs.dim() != 3:
        raise ValueError(f"costs must be (batch, N, M); got {tuple(costs.shape)}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0; got {gamma}")
    b, n, m = costs.shape
    xl = _lengths(x_lengths, b, n, "x_lengths")
    yl = _lengths(y_lengths, b, m, "y_lengths")
    return _SoftDTW.apply(costs, xl, yl, float(gamma))


def soft_dtw(
    x: torch.Tensor,
    y: torch.Tensor,
    gamma: float = DEFAULT_GAMMA,
    x_lengths: torch.Tensor | None = None,
    y_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft-DTW between `x (B, N, D)` and `y (B, M, D)` (padded) on squared Euclidean costs -> `(B,)`."""
    _check_pair(x, y)
    return soft_dtw_from_costs(pairwise_squared_euclidean(x, y), x_lengths, y_lengths, gamma)


def soft_dtw_divergence(
    x: torch.Tensor,
    y: torch.Tensor,
    gamma: float = DEFAULT_GAMMA,
    x_lengths: torch.Tensor | None = None,
    y_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """`sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2` per item -> `(B,)`.

    Zero for identical inputs. The three soft-DTWs run as one wavefront over a batch of 3B pairs
    (both sides padded to the longer of N and M), a third of the sequential steps of three calls.
    """
    _check_pair(x, y)
    b, n, _ = x.shape
    m = y.shape[1]
    xl = _lengths(x_lengths, b, n, "x_lengths")
    yl = _lengths(y_lengths, b, m, "y_lengths")
    length = max(n, m)
    xp = torch.nn.functional.pad(x, (0, 0, 0, length - n))
    yp = torch.nn.functional.pad(y, (0, 0, 0, length - m))
    left = torch.cat([xp, xp, yp])
    right = torch.cat([yp, xp, yp])
    values = soft_dtw(left, right, gamma, torch.cat([xl, xl, yl]), torch.cat([yl, xl, yl]))
    xy, xx, yy = values.split(b)
    return xy - 0.5 * (xx + yy)


def score_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    gamma: float = DEFAULT_GAMMA,
    x_lengths: torch.Tensor | None = None,
    y_lengths: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """SCORE's objective: soft-DTW divergence divided by `len_x + len_y`, per item.

    Inputs are the projected frames; SCORE L2-normalises them first (do that before calling).
    `reduction`: "mean" (SCORE with batch size 1), "sum" or "none" (`(B,)`).
    """
    b, n, _ = x.shape
    xl = _lengths(x_lengths, b, n, "x_lengths")
    yl = _lengths(y_lengths, b, y.shape[1], "y_lengths")
    per_item = soft_dtw_divergence(x, y, gamma, xl, yl) / (xl + yl).to(device=x.device, dtype=x.dtype)
    if reduction == "mean":
        return per_item.mean()
    if reduction == "sum":
        return per_item.sum()
    if reduction == "none":
        return per_item
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")


# ---------------------------------------------------------------------------------------------


class _SoftDTW(torch.autograd.Function):
    @staticmethod
    def forward(ctx, costs, x_lengths, y_lengths, gamma):
        x_lengths, y_lengths = x_lengths.to(costs.device), y_lengths.to(costs.device)
        with _serial_on_cpu(costs):
            r, dn = _wavefront(costs.detach(), gamma)
        ctx.save_for_backward(r, dn, x_lengths, y_lengths)
        return r[torch.arange(len(r), device=r.device), x_lengths + y_lengths, x_lengths] * -gamma

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values):
        r, dn, x_lengths, y_lengths = ctx.saved_tensors
        with _serial_on_cpu(r):
            e = _reverse_wavefront(r, dn, x_lengths, y_lengths)
        return e * grad_values[:, None, None], None, None, None


def _wavefront(costs: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward recursion on `(B, n, m)` costs -> skewed `r = -R / gamma` and `dn = -C / gamma`.

    Both are `(B, n + m + 3, n + 2)`: entry `[b, k, i]` is cell (i, k - i) (1-based), -inf off
    the matrix; the guard columns i = 0, n + 1 and two extra diagonals keep every slice in range.
    """
    b, n, m = costs.shape
    kk, ii = _skew_index(n, m, costs.device)
    dn = torch.full((b, n + m + 3, n + 2), -math.inf, dtype=costs.dtype, device=costs.device)
    dn[:, kk, ii] = costs / -gamma
    r = torch.full_like(dn, -math.inf)
    r[:, 0, 0] = 0.0
    for k in range(2, n + m + 1):
        lo, hi = max(1, k - m), min(n, k - 1) + 1
        prev = torch.stack((r[:, k - 2, lo - 1 : hi - 1], r[:, k - 1, lo - 1 : hi - 1], r[:, k - 1, lo:hi]))
        torch.add(dn[:, k, lo:hi], torch.logsumexp(prev, dim=0), out=r[:, k, lo:hi])
    return r, dn


def _reverse_wavefront(
    r: torch.Tensor, dn: torch.Tensor, x_lengths: torch.Tensor, y_lengths: torch.Tensor
) -> torch.Tensor:
    """Cuturi & Blondel's E matrix `(B, n, m)`: d sdtw / d costs, zero outside each item's lengths.

    E[c] = sum over successors s of E[s] exp((R[s] - R[c] - C[s]) / gamma). With F = E exp(R /
    gamma) this is F[c] = sum_s F[s] exp(-C[s] / gamma): the backward half of a forward-backward
    pass, kept as logs, lf = log F, and E = exp(lf - R / gamma) at the end. g[s] = lf[s] - C[s] /
    gamma is what a cell sends back; cells outside an item's rectangle send -inf.
    """
    b, diagonals, width = r.shape
    n, m = width - 2, diagonals - 3 - (width - 2)
    device = r.device
    k_idx = torch.arange(diagonals, device=device)[None, :, None]
    i_idx = torch.arange(width, device=device)[None, None, :]
    j_idx = k_idx - i_idx
    valid = (i_idx >= 1) & (i_idx <= x_lengths[:, None, None]) & (j_idx >= 1) & (j_idx <= y_lengths[:, None, None])
    dn_valid = torch.where(valid, dn, torch.full_like(dn, -math.inf))
    lf = torch.full_like(r, -math.inf)
    g = torch.full_like(r, -math.inf)
    terminal: dict[int, list[int]] = {}
    for item, end in enumerate((x_lengths + y_lengths).tolist()):
        terminal.setdefault(end, []).append(item)
    for k in range(n + m, 1, -1):
        lo, hi = max(1, k - m), min(n, k - 1) + 1
        nxt = torch.stack((g[:, k + 1, lo + 1 : hi + 1], g[:, k + 1, lo:hi], g[:, k + 2, lo + 1 : hi + 1]))
        torch.logsumexp(nxt, dim=0, out=lf[:, k, lo:hi])
        if k in terminal:  # E = 1 at (n_b, m_b): lf = R[n_b, m_b] / gamma
            items = torch.tensor(terminal[k], device=device)
            rows = x_lengths[items]
            lf[items, k, rows] = -r[items, k, rows]
        torch.add(dn_valid[:, k, lo:hi], lf[:, k, lo:hi], out=g[:, k, lo:hi])
    # Cells far from every good alignment have E ~ exp(-thousands). Anything that would be
    # subnormal is set to 0 exactly: subnormal floats make exp and the matmuls of the distance
    # backward tens of times slower on CPUs, and they change no gradient.
    log_e = lf + r
    floor = math.log(torch.finfo(r.dtype).tiny) + 20.0
    e = log_e.masked_fill_(~(valid & (log_e > floor)), -math.inf).exp_()
    kk, ii = _skew_index(n, m, device)
    return e[:, kk, ii]


@contextlib.contextmanager
def _serial_on_cpu(t: torch.Tensor):
    """Run a wavefront with one intra-op thread on CPU, restoring torch's setting after.

    Each diagonal is a few small ops (B x diagonal-length elements); splitting them across
    cores makes every op wait for all of them, which measured 2-10x slower than one thread on a
    2-core machine shared with other work, and ops this small gain little from idle cores.
    """
    with torch_threads(1 if t.device.type == "cpu" else None):
        yield


def _skew_index(n: int, m: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """`(kk, ii)`, each `(n, m)`: cell (i, j) of the cost matrix sits at diagonal i + j + 2, row i + 1."""
    ii = torch.arange(1, n + 1, device=device)[:, None].expand(n, m)
    jj = torch.arange(1, m + 1, device=device)[None, :].expand(n, m)
    return ii + jj, ii


def _lengths(lengths, batch: int, full: int, name: str) -> torch.Tensor:
    if lengths is None:
        return torch.full((batch,), full, dtype=torch.long)
    lengths = torch.as_tensor(lengths).to(torch.long).reshape(-1).cpu()
    if lengths.numel() != batch:
        raise ValueError(f"{name} must have {batch} entries; got {lengths.numel()}")
    if bool((lengths < 1).any()) or bool((lengths > full).any()):
        raise ValueError(f"{name} must lie in [1, {full}]; got {lengths.tolist()}")
    return lengths


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"x and y must be (B, N, D) and (B, M, D); got {tuple(x.shape)} and {tuple(y.shape)}")
