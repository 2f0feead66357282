"""Random patch masking for M2D, as pure functions of their inputs and a `torch.Generator`.

Convention, stated once: in a mask, **0 means keep (visible to the online encoder) and 1 means
remove (masked: encoded by the target encoder and predicted)**.

Patches are indexed in the encoder's `(f t)` token order over a `grid_f x grid_t` grid, so index
`i` is frequency row `i // grid_t`, time column `i % grid_t`. Every sample in a batch gets its own
random mask with the same number of visible patches, so visible tokens stack into `[B, K, D]`.
Given the same generator state the masks are identical, which makes runs and resumes reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PatchMask", "num_visible", "random_mask", "time_span_mask", "make_mask", "gather_tokens", "merge_tokens"]


@dataclass(frozen=True)
class PatchMask:
    """Which patches each sample keeps and removes.

    ids_keep: `[B, K]` visible patch indices, ascending.
    ids_mask: `[B, M]` masked patch indices, ascending; `K + M = L` patches.
    """

    ids_keep: Tensor
    ids_mask: Tensor

    @property
    def num_patches(self) -> int:
        return self.ids_keep.shape[1] + self.ids_mask.shape[1]

    def binary(self) -> Tensor:
        """`[B, L]` float mask, 0 keep, 1 remove."""
        b = self.ids_keep.shape[0]
        out = torch.ones(b, self.num_patches, device=self.ids_keep.device)
        return out.scatter_(1, self.ids_keep, 0.0)

    def to(self, device: torch.device | str) -> "PatchMask":
        return PatchMask(self.ids_keep.to(device), self.ids_mask.to(device))


def num_visible(num_patches: int, ratio: float) -> int:
    """Patches left visible by masking `ratio` of `num_patches`; at least one of each kind.

    `round` rather than MAE's `int()`: 380 * (1 - 0.7) is 113.99999... in floating point.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    keep = round(num_patches * (1.0 - ratio))
    if not 0 < keep < num_patches:
        raise ValueError(f"mask ratio {ratio} leaves {keep} of {num_patches} patches visible; need 1..{num_patches - 1}")
    return keep


def random_mask(batch_size: int, num_patches: int, ratio: float = 0.7, generator: torch.Generator | None = None) -> PatchMask:
    """Per-sample uniform random masking (M2D's unstructured mask; ratio 0.7 default, 0.6 variant).

    Returns indices on the generator's device (CPU when `generator` is None). Each sample ranks its
    patches by uniform noise; the `K` lowest are kept. Indices are sorted so that visible tokens keep
    their `(f t)` order.
    """
    keep = num_visible(num_patches, ratio)
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.rand(batch_size, num_patches, generator=generator, device=device)
    order = noise.argsort(dim=1)
    ids_keep, _ = order[:, :keep].sort(dim=1)
    ids_mask, _ = order[:, keep:].sort(dim=1)
    return PatchMask(ids_keep, ids_mask)


def time_span_mask(batch_size: int, grid: tuple[int, int], ratio: float, span: int,
                   generator: torch.Generator | None = None) -> PatchMask:
    """M2D-S-style masking of whole time columns in contiguous spans of `span` patches.

    With full-band patches (grid_f = 1) random single-patch masking leaves every masked frame next
    to a visible one, so the predictor can interpolate its neighbours; masking runs of `span`
    frames forces it to predict content it cannot see. Each sample cuts the time axis into blocks
    of `span` columns at a random phase and masks the blocks of lowest noise until `ratio` of the
    columns are masked (the last block may be cut short), across every frequency row, so all
    samples mask the same number of patches. `span = 1` is random column masking.
    """
    gf, gt = grid
    if span < 1:
        raise ValueError(f"mask span must be >= 1 patch, got {span}")
    keep_cols = num_visible(gt, ratio)
    device = generator.device if generator is not None else torch.device("cpu")
    phase = torch.randint(0, span, (batch_size, 1), generator=generator, device=device)
    block = (torch.arange(gt, device=device)[None, :] + phase) // span  # [B, gt]
    block_noise = torch.rand(batch_size, gt // span + 2, generator=generator, device=device)
    # block noise decides; the column index breaks ties so a block is masked from one end
    score = torch.gather(block_noise, 1, block) + torch.arange(gt, device=device)[None, :] * 1e-6
    cols = score.argsort(dim=1)
    keep_t, _ = cols[:, :keep_cols].sort(dim=1)
    mask_t, _ = cols[:, keep_cols:].sort(dim=1)
    rows = torch.arange(gf, device=device)[None, :, None] * gt  # [1, gf, 1]
    ids_keep = (rows + keep_t[:, None, :]).flatten(1).sort(dim=1).values
    ids_mask = (rows + mask_t[:, None, :]).flatten(1).sort(dim=1).values
    return PatchMask(ids_keep, ids_mask)


def make_mask(batch_size: int, grid: tuple[int, int], ratio: float, span: int = 0,
              generator: torch.Generator | None = None) -> PatchMask:
    """The training mask of a run: `random_mask` when `span` is 0 (the paper), else `time_span_mask`."""
    if span <= 0:
        return random_mask(batch_size, grid[0] * grid[1], ratio, generator)
    return time_span_mask(batch_size, grid, ratio, span, generator)


def gather_tokens(x: Tensor, ids: Tensor) -> Tensor:
    """Select tokens: `x [B, L, D]`, `ids [B, N]` -> `[B, N, D]`."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def merge_tokens(kept: Tensor, masked: Tensor, mask: PatchMask) -> Tensor:
    """Put visible `[B, K, D]` and masked `[B, M, D]` tokens back in patch order -> `[B, K + M, D]`."""
    restore = torch.cat([mask.ids_keep, mask.ids_mask], dim=1).argsort(dim=1)
    return gather_tokens(torch.cat([kept, masked.to(kept.dtype)], dim=1), restore)
