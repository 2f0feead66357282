"""Batches formed by total padded audio duration, not by count (s3prl's most common memory complaint).

Sorting by length and cutting whenever `items x longest` would exceed the budget keeps padding -
and therefore wasted compute and peak memory - small, whatever the mix of 1 s keywords and 30 s
recordings in a dataset.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["batches_by_duration"]


def batches_by_duration(
    lengths: Sequence[int], max_padded: int, max_items: int | None = None, descending: bool = True
) -> list[list[int]]:
    """Indices grouped so that `len(batch) * max(lengths in batch) <= max_padded`.

    Items longer than the budget form batches of their own (upstreams window long audio
    internally). Within a batch, indices are ordered longest first.
    """
    if max_padded <= 0:
        raise ValueError(f"max_padded must be positive, got {max_padded}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i) if descending else (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = lengths[i]
        new_longest = max(longest, n)
        too_big = current and new_longest * (len(current) + 1) > max_padded
        too_many = max_items is not None and len(current) >= max_items
        if too_big or too_many:
            batches.append(current)
            current, new_longest = [], n
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches
