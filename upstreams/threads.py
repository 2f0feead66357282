"""Run small-op code with fewer intra-op threads.

Heads on cached features, CTC/LSTM recursions and soft-DTW wavefronts are thousands of tiny ops.
With several threads each op waits until all of them are scheduled, which on a busy machine costs
far more than the op itself. Measured on 2 cores at load average ~5: 3 x 200 epochs of a head
took 276 s with 2 threads and 15 s with 1.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Use `n` intra-op threads inside the block (None: leave the count alone); restore it afterwards."""
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
