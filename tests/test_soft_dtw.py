"""Soft-DTW: values and gradients against a naive O(NM) recursion, gradcheck, pysdtw, SCORE's loss."""

from __future__ import annotations

import math

import pytest
import torch

from upstreams.score.soft_dtw import (
    pairwise_squared_euclidean,
    score_loss,
    soft_dtw,
    soft_dtw_divergence,
    soft_dtw_from_costs,
)


def naive_soft_dtw(x: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """Cuturi & Blondel's recursion cell by cell on unpadded (N, D), (M, D); autograd does the rest."""
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    n, m = cost.shape
    inf = torch.tensor(math.inf, dtype=x.dtype)
    r = [[inf] * (m + 1) for _ in range(n + 1)]
    r[0][0] = torch.tensor(0.0, dtype=x.dtype)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = torch.stack([r[i - 1][j - 1], r[i - 1][j], r[i][j - 1]])
            r[i][j] = cost[i - 1, j - 1] - gamma * torch.logsumexp(-prev / gamma, 0)
    return r[n][m]


def naive_dtw(cost: torch.Tensor) -> float:
    n, m = cost.shape
    r = [[math.inf] * (m + 1) for _ in range(n + 1)]
    r[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            r[i][j] = float(cost[i - 1, j - 1]) + min(r[i - 1][j - 1], r[i - 1][j], r[i][j - 1])
    return r[n][m]


def batch(seed: int, b: int = 5, n: int = 7, m: int = 9, d: int = 4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g, dtype=dtype)
    y = torch.randn(b, m, d, generator=g, dtype=dtype)
    xl = torch.randint(1, n + 1, (b,), generator=g)
    yl = torch.randint(1, m + 1, (b,), generator=g)
    xl[0], yl[0] = n, m  # one full-size item
    xl[1], yl[1] = 1, m  # one degenerate item
    return x, y, xl, yl


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_values_and_gradients_equal_naive(seed, gamma):
    x, y, xl, yl = batch(seed)
    x.requires_grad_(True)
    y.requires_grad_(True)
    values = soft_dtw(x, y, gamma, xl, yl)
    weights = torch.linspace(0.5, 2.0, len(values), dtype=values.dtype)  # distinct upstream grads
    (values * weights).sum().backward()
    for b in range(len(values)):
        xb = x[b, : xl[b]].detach().requires_grad_(True)
        yb = y[b, : yl[b]].detach().requires_grad_(True)
        ref = naive_soft_dtw(xb, yb, gamma)
        (ref * weights[b]).backward()
        assert values[b].item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-12)
        torch.testing.assert_close(x.grad[b, : xl[b]], xb.grad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(y.grad[b, : yl[b]], yb.grad, rtol=1e-10, atol=1e-10)
        assert (x.grad[b, xl[b] :] == 0).all() and (y.grad[b, yl[b] :] == 0).all()


def test_padding_content_is_ignored():
    x, y, xl, yl = batch(3)
    base = soft_dtw(x, y, 0.1, xl, yl)
    x2, y2 = x.clone(), y.clone()
    for b in range(len(xl)):
        x2[b, xl[b] :] = 1e3
        y2[b, yl[b] :] = -1e3
    torch.testing.assert_close(soft_dtw(x2, y2, 0.1, xl, yl), base, rtol=0, atol=0)
    singles = torch.stack([soft_dtw(x[b : b + 1, : xl[b]], y[b : b + 1, : yl[b]], 0.1)[0] for b in range(len(xl))])
    torch.testing.assert_close(singles, base, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    x, y, xl, yl = batch(4, b=3, n=4, m=5, d=2)
    costs = pairwise_squared_euclidean(x, y).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: soft_dtw_from_costs(c, xl, yl, 0.3), (costs,))
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: soft_dtw_divergence(a, b, 0.5, xl, yl), (x, y))


def test_small_gamma_approaches_dtw():
    x, y, xl, yl = batch(5, b=3)
    costs = pairwise_squared_euclidean(x, y)
    values = soft_dtw_from_costs(costs, xl, yl, gamma=1e-4)
    for b in range(3):
        hard = naive_dtw(costs[b, : xl[b], : yl[b]])
        # softmin of 3 values is at most log(3) * gamma below min, per cell of the path
        assert hard - (xl[b] + yl[b]) * math.log(3) * 1e-4 <= values[b].item() <= hard + 1e-9


def test_divergence_zero_for_identical_and_nonnegative():
    x, _, xl, _ = batch(6)
    torch.testing.assert_close(soft_dtw_divergence(x, x.clone(), 0.1, xl, xl), torch.zeros(len(xl), dtype=x.dtype))
    g = torch.Generator().manual_seed(7)
    for _ in range(5):  # SCORE's setting: L2-normalised frames, gamma 0.1
        a = torch.nn.functional.normalize(torch.randn(8, 12, 16, generator=g, dtype=torch.float64), dim=-1)
        b = torch.nn.functional.normalize(torch.randn(8, 15, 16, generator=g, dtype=torch.float64), dim=-1)
        assert (soft_dtw_divergence(a, b, 0.1, torch.randint(1, 13, (8,), generator=g),
                                    torch.randint(1, 16, (8,), generator=g)) >= 0).all()


def test_score_loss_matches_score_for_batch_size_one():
    g = torch.Generator().manual_seed(8)
    x = torch.nn.functional.normalize(torch.randn(1, 11, 8, generator=g), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(1, 14, 8, generator=g), dim=-1)
    # SCORE: (sdtw(x,y) - 1/2 (sdtw(x,x) + sdtw(y,y))).mean() / (x.shape[1] + y.shape[1])
    expected = (soft_dtw(x, y) - 0.5 * (soft_dtw(x, x) + soft_dtw(y, y))).mean() / (11 + 14)
    torch.testing.assert_close(score_loss(x, y), expected)
    xb, yb, xl, yl = batch(9, dtype=torch.float32)
    per_item = score_loss(xb, yb, 0.1, xl, yl, reduction="none")
    torch.testing.assert_close(per_item, soft_dtw_divergence(xb, yb, 0.1, xl, yl) / (xl + yl).float())
    torch.testing.assert_close(score_loss(xb, yb, 0.1, xl, yl), per_item.mean())


def test_errors():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="x_lengths"):
        soft_dtw(x, x, 0.1, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="gamma"):
        soft_dtw(x, x, 0.0)
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        soft_dtw(x, torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="reduction"):
        score_loss(x, x, reduction="max")


@pytest.mark.slow  # pysdtw compiles its numba kernels on first use (~20 s)
@pytest.mark.interop
def test_against_pysdtw():
    """pysdtw runs the same recursion (squared-L2 costs, PackedSequence lengths) but stores R as
    float32 whatever the input; compare it to our float64 result at float32 accuracy."""
    pysdtw = pytest.importorskip("pysdtw")
    from torch.nn.utils.rnn import pack_padded_sequence

    x, y, xl, yl = batch(10, b=6, n=20, m=25, d=8)

    def run(fn, dtype):
        a = x.detach().to(dtype).requires_grad_(True)
        b = y.detach().to(dtype).requires_grad_(True)
        values = fn(a, b)
        values.sum().backward()
        return values.double(), a.grad.double(), b.grad.double()

    ours = run(lambda a, b: soft_dtw(a, b, 0.1, xl, yl), torch.float64)
    lib = pysdtw.SoftDTW(gamma=0.1, use_cuda=False)
    theirs = run(
        lambda a, b: lib(
            pack_padded_sequence(a, xl, batch_first=True, enforce_sorted=False),
            pack_padded_sequence(b, yl, batch_first=True, enforce_sorted=False),
        ),
        torch.float32,
    )
    torch.testing.assert_close(theirs[0], ours[0], rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(theirs[1], ours[1], rtol=0, atol=3e-3)  # grads are O(1-10)
    torch.testing.assert_close(theirs[2], ours[2], rtol=0, atol=3e-3)
    ours32 = run(lambda a, b: soft_dtw(a, b, 0.1, xl, yl), torch.float32)  # ours in float32: same class
    torch.testing.assert_close(ours32[0], ours[0], rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(ours32[1], ours[1], rtol=0, atol=3e-3)
