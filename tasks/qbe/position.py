"""Removing the within-window position component from frame features before QbE scoring.

Why: an upstream that encodes long audio in independent windows with absolute position
embeddings (the M2D ViTs: every pretraining-sized window gets the same 2-D sin-cos positions)
leaves in every hidden state a trace of where in its window the frame sits. That trace is shared
by all utterances, so unrelated frames at the same within-window position look alike: for the
untrained mini ViT on mini QUESST dev, position explains 17 % (layer 0) to 30 % (layer 4) of the
standardised frame variance (fbank: 0.6 %), and frames of two unrelated documents at the same
index have cosine +0.22 to +0.34 after the QbE standardisation, 0.00 at other offsets.
Subsequence DTW then rewards alignments that keep query and document positions in step, i.e.
it ranks documents by position agreement instead of content. The component depends on the
position only, so its estimate -- the mean frame at each within-window position -- can be taken
from the unlabelled frames of the very split being scored (no labels, no other data) and
subtracted, leaving what frames differ in beyond their position. An upstream without windows
(`frames_per_window=None`, e.g. fbank) is left exactly as it was.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral
from typing import Sequence

import torch

__all__ = ["PositionRemoval", "position_means", "position_variance_fraction", "remove_position_mean"]


@dataclass
class PositionRemoval:
    """Result of `remove_position_mean`.

    features: the corrected `(frames, dim)` tensors, in input order (the inputs themselves,
        untouched, when `frames_per_window` is None).
    frames_per_window: as given.
    position_mean: `(frames_per_window, dim)` float64 mean frame at each within-window position
        over all input frames (None without windows).
    counts: `(frames_per_window,)` frames seen at each position (None without windows).
    variance_before / variance_after: `position_variance_fraction` of the input and of the
        output (None without windows).
    """

    features: list[torch.Tensor]
    frames_per_window: int | None
    position_mean: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    variance_before: float | None = None
    variance_after: float | None = None

    def summary(self) -> dict:
        """JSON-ready summary for result records (fractions rounded to 4 decimals)."""
        r = (lambda v: None if v is None else round(float(v), 4))
        return {"frames_per_window": self.frames_per_window, "variance_fraction_before": r(self.variance_before),
                "variance_fraction_after": r(self.variance_after)}


def _check(features: Sequence[torch.Tensor], frames_per_window: int) -> int:
    if isinstance(frames_per_window, bool) or not isinstance(frames_per_window, Integral) or frames_per_window < 1:
        raise ValueError(f"frames_per_window must be a positive int or None, got {frames_per_window!r}")
    if not features:
        raise ValueError("no features given")
    dim = features[0].shape[-1]
    for i, f in enumerate(features):
        if f.dim() != 2 or f.shape[-1] != dim:
            raise ValueError(f"feature {i} must be (frames, {dim}); got {tuple(f.shape)}")
    return dim


@contextmanager
def _one_thread():
    """Single-threaded torch while this runs: the per-tensor ops are small, and on a shared CPU
    torch's intra-op threads made them 30-100x slower (measured; `tasks.qbe.dtw` does the same)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_FLUSH_EVERY = 64  # tensors summed in the input's precision before each float64 update


def _position_sums(features, frames_per_window: int, dim: int):
    """Sufficient statistics of frames shifted by a reference frame `ref` (against cancellation).

    Returns float64 per-position sums `(P, dim)` and counts `(P,)`, per-dimension sums of squares
    `(dim,)` and `ref` `(dim,)`. Sums are formed in the input precision over a few tensors and
    then added in float64: converting every frame to float64 costs more than the whole pass.
    """
    p = frames_per_window
    first = next((f for f in features if f.shape[0]), None)
    if first is None:
        raise ValueError("no frames to take position statistics over")
    work = torch.promote_types(first.dtype, torch.float32)
    ref = first.detach()[0].to(work)
    sums = torch.zeros(p, dim, dtype=torch.float64)
    counts = torch.zeros(p, dtype=torch.float64)
    squares = torch.zeros(dim, dtype=torch.float64)
    block = torch.zeros(p, dim, dtype=work)
    for k, f in enumerate(features):
        n = f.shape[0]
        if n:
            x = f.detach().to(work) - ref
            full = (n // p) * p
            if full:
                block += x[:full].reshape(-1, p, dim).sum(0)
                counts += n // p
            if full < n:
                block[: n - full] += x[full:]
                counts[: n - full] += 1
            squares += x.square().sum(0, dtype=torch.float64)
        if (k + 1) % _FLUSH_EVERY == 0:
            sums += block.to(torch.float64)
            block.zero_()
    sums += block.to(torch.float64)
    return sums, counts, squares, ref.to(torch.float64)


def position_means(features: Sequence[torch.Tensor], frames_per_window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`((P, dim) float64 mean frame per within-window position t % P, (P,) frame counts)`.

    Positions never seen (every input shorter than P) get the mean of all frames.
    """
    dim = _check(features, frames_per_window)
    with _one_thread():
        sums, counts, _, ref = _position_sums(features, int(frames_per_window), dim)
    return _means(sums, counts, ref)[0], counts


def _means(sums, counts, ref):
    """Per-position means (unseen positions: the overall mean) and the overall mean, float64."""
    overall = sums.sum(0) / counts.sum()
    means = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], overall)
    return means + ref, overall + ref


def _fraction(sums, counts, squares, _ref=None) -> float:
    """Mean over dimensions of (between-position / total sum of squares); constant dimensions skipped.

    Both sums of squares are invariant to the shift by `_ref` (accepted so that `_position_sums`'
    result can be passed as it is).
    """
    total = counts.sum()
    overall = sums.sum(0) / total
    total_ss = squares - total * overall.square()
    seen = counts > 0
    between = (sums[seen].square() / counts[seen, None]).sum(0) - total * overall.square()
    live = total_ss > 1e-12 * squares.clamp(min=1e-300)
    if not bool(live.any()):
        return 0.0
    return float((between[live] / total_ss[live]).clamp(0.0, 1.0).mean())


def position_variance_fraction(features: Sequence[torch.Tensor], frames_per_window: int) -> float:
    """Fraction of the standardised frame variance explained by within-window position.

    Per dimension d, `sum_p n_p (mean_pd - mean_d)^2 / sum_t (x_td - mean_d)^2` over all frames of
    all inputs (position p = t % frames_per_window, t the frame index within its own tensor),
    averaged over dimensions: the share of the variance of the features as QbE's per-dimension
    standardisation leaves them. Dimensions constant over all frames are left out.
    """
    dim = _check(features, frames_per_window)
    with _one_thread():
        return _fraction(*_position_sums(features, int(frames_per_window), dim))


def remove_position_mean(features: Sequence[torch.Tensor], frames_per_window: int | None) -> PositionRemoval:
    """Subtract from every frame the deviation of its position's mean frame from the overall mean.

    Frame t of each tensor is at within-window position `t % frames_per_window` (windows start at
    frame 0 of every utterance, as the windowed encoders cut them). The statistic is taken over
    all given frames together -- pass one split's queries and documents, nothing else. The
    overall mean is kept, so afterwards every position's mean equals the overall mean (the
    standardisation of `qbe_scores` removes that anyway). With `frames_per_window=None` the
    inputs are returned as they are (same tensor objects).
    """
    features = list(features)
    if frames_per_window is None:
        return PositionRemoval(features, None)
    dim = _check(features, frames_per_window)
    frames_per_window = int(frames_per_window)
    with _one_thread():
        sums, counts, squares, ref = _position_sums(features, frames_per_window, dim)
        before = _fraction(sums, counts, squares)
        means, overall = _means(sums, counts, ref)
        offset = means - overall  # (P, dim) float64
        out = []
        for f in features:
            positions = torch.arange(f.shape[0]) % frames_per_window
            out.append(f.detach() - offset.to(f.dtype)[positions])
        after = _fraction(*_position_sums(out, frames_per_window, dim))
    return PositionRemoval(out, frames_per_window, means, counts, before, after)
