"""Soft-DTW speed (forward + backward, CPU): our wavefront vs a naive recursion and vs pysdtw.

    python benchmarks/soft_dtw.py                       # B=8, 100x100 and 300x300, D=256
    python benchmarks/soft_dtw.py --sizes 50 100 --threads 1 --repeats 5

The naive recursion is Cuturi & Blondel's double loop with autograd (what one writes first); it
takes seconds per pair, so it is timed on `--naive-pairs` pairs and scaled to the batch, and
skipped above `--naive-max` frames. pysdtw 0.0.5 (numba, CPU) runs the same recursion.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from upstreams.score.soft_dtw import soft_dtw, soft_dtw_divergence  # noqa: E402


def naive_soft_dtw(x: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
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


def fwd_bwd_seconds(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x, y, repeats: int, warmup: bool = True
) -> float:
    """Fastest of `repeats` timings of `fn(x, y).sum().backward()` (after one warm-up run)."""
    best = math.inf
    for i in range(repeats + int(warmup)):
        a = x.detach().clone().requires_grad_(True)
        b = y.detach().clone().requires_grad_(True)
        start = time.perf_counter()
        fn(a, b).sum().backward()
        if i or not warmup:
            best = min(best, time.perf_counter() - start)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 300], help="sequence lengths (N = M)")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive-pairs", type=int, default=1)
    p.add_argument("--naive-max", type=int, default=100, help="skip the naive loop above this length")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import pysdtw

        lib = pysdtw.SoftDTW(gamma=args.gamma, use_cuda=False)
    except ImportError:
        lib = None
    print(f"forward+backward, float32, CPU, {torch.get_num_threads()} torch threads, gamma {args.gamma}, "
          f"batch {args.batch}, dim {args.dim}")
    g = torch.Generator().manual_seed(0)
    inputs = {
        n: tuple(torch.nn.functional.normalize(torch.randn(args.batch, n, args.dim, generator=g), dim=-1) for _ in "xy")
        for n in args.sizes
    }
    # Ours first for every size: pysdtw's numba worker threads keep spinning after a call and
    # would slow down whatever runs next in this process.
    rows = {n: {} for n in args.sizes}
    for n, (x, y) in inputs.items():
        rows[n]["ours"] = fwd_bwd_seconds(lambda a, b: soft_dtw(a, b, args.gamma), x, y, args.repeats)
        rows[n]["divergence"] = fwd_bwd_seconds(lambda a, b: soft_dtw_divergence(a, b, args.gamma), x, y, args.repeats)
    for n, (x, y) in inputs.items():
        if n <= args.naive_max:
            k = max(1, min(args.naive_pairs, args.batch))
            def naive_batch(a, b, k=k):
                return torch.stack([naive_soft_dtw(a[i], b[i], args.gamma) for i in range(k)])

            one = fwd_bwd_seconds(naive_batch, x, y, 1, warmup=False)
            rows[n]["naive"] = one * args.batch / k
    if lib is not None:
        for n, (x, y) in inputs.items():
            rows[n]["pysdtw"] = fwd_bwd_seconds(lib, x, y, args.repeats)
    for n, row in rows.items():
        ours = row["ours"]
        line = f"{n}x{n}: ours {ours * 1e3:7.1f} ms | divergence (3 soft-DTWs) {row['divergence'] * 1e3:7.1f} ms"
        if "pysdtw" in row:
            line += f" | pysdtw {row['pysdtw'] * 1e3:7.1f} ms (ours {row['pysdtw'] / ours:.1f}x faster)"
        if "naive" in row:
            pairs = min(args.naive_pairs, args.batch)
            line += f" | naive loop {row['naive']:6.1f} s (from {pairs} pair(s); ours {row['naive'] / ours:.0f}x faster)"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
