"""Registry entries for the M2D-architecture upstreams."""

from __future__ import annotations

from ..registry import register_upstream
from ..runs import latest_checkpoint
from .upstream import M2DUpstream, load_bundle, random_upstream

PAPER = "Niizumi et al., Masked Modeling Duo, TASLP 2024 (arXiv 2404.06095)"


@register_upstream(
    "random",
    description="M2D ViT architecture with seeded random weights: the no-pretraining control",
    paper=PAPER,
)
def random(ckpt=None, arch: str = "mini", seed: int = 0, max_windows: int = 64) -> M2DUpstream:
    if ckpt is not None:
        from ..errors import OptionError

        raise OptionError("random has no weights to load; choose the architecture with arch=tiny|mini|base")
    return random_upstream(arch=arch, seed=seed, max_windows=max_windows)


@register_upstream("m2d", description="M2D pretrained in this repository (bench pretrain m2d)", paper=PAPER,
                   needs_checkpoint=True)
def m2d(ckpt=None, max_windows: int = 64) -> M2DUpstream:
    return load_bundle(ckpt or latest_checkpoint("m2d"), max_windows=max_windows)


@register_upstream(
    "m2dx",
    description="M2D-X further pretrained with an extra task and background noise (bench pretrain m2dx)",
    paper=PAPER,
    needs_checkpoint=True,
)
def m2dx(ckpt=None, max_windows: int = 64) -> M2DUpstream:
    return load_bundle(ckpt or latest_checkpoint("m2dx"), max_windows=max_windows)
