"""Registry entries for the M2D-architecture upstreams."""

from __future__ import annotations

from ..registry import register_upstream
from ..runs import latest_checkpoint
from .upstream import M2DUpstream, load_bundle, random_upstream

PAPER = "Niizumi et al., Masked Modeling Duo, TASLP 2024 (arXiv 2404.06095)"


@register_upstream(
    "random",
    description="M2D ViT architecture with seeded random weights: the no-pretraining control "
                "(like=CKPT: the exact step-0 twin of the run that wrote CKPT)",
    paper=PAPER,
)
def random(ckpt=None, arch: str | None = None, seed: int | None = None, max_windows: int = 64,
           like: str | None = None) -> M2DUpstream:
    """arch=tiny|mini|base (default mini) and seed (default 0) pick a seeded random ViT; like=CKPT
    instead rebuilds the step 0 of the m2d/m2dx run that wrote CKPT: its architecture, front end,
    normalisation statistics and initial weights (`upstreams.m2d.twin`)."""
    from ..errors import OptionError

    if ckpt is not None:
        raise OptionError("random has no weights to load; for the step-0 twin of a pretraining run pass "
                          "-o like=CKPT (Python: like=CKPT), else choose the architecture with arch=tiny|mini|base")
    if like is not None:
        if seed is not None:
            raise OptionError("random: seed cannot be combined with like=CKPT - the seed comes from the run (its "
                              "train.seed); drop seed")
        if arch is not None:
            raise OptionError("random: arch cannot be combined with like=CKPT - the architecture comes from the run's "
                              "checkpoint; drop arch")
        from .twin import twin_of

        return twin_of(like, max_windows=max_windows)
    return random_upstream(arch=arch or "mini", seed=0 if seed is None else seed, max_windows=max_windows)


def _stored_method(path) -> str | None:
    """The `method` a training checkpoint of this suite records (None: a plain bundle, an official
    checkpoint, or a file the loader will report on). Memory-mapped, so a large file costs no second read."""
    import torch

    try:
        if str(path).endswith(".safetensors"):  # an export: the method is in its metadata
            from ..checkpoints import read_checkpoint

            obj = read_checkpoint(path)
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # not a zip-format file: mmap is refused
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable here means: let load_bundle give its own error
        return None
    method = obj.get("method") if isinstance(obj, dict) else None
    return method if isinstance(method, str) else None


def _check_method(path, upstream: str, any_method: bool) -> None:
    """Refuse a checkpoint that another method wrote (it would be recorded under the wrong name)."""
    from ..errors import OptionError

    method = None if any_method else _stored_method(path)
    if method is not None and method != upstream:
        raise OptionError(f"--ckpt {path} is a '{method}' run, not '{upstream}': evaluate it with --upstream {method} "
                          f"(or pass -o any_method=True to load its encoder as {upstream} anyway)")


@register_upstream("m2d", description="M2D pretrained in this repository (bench pretrain m2d)", paper=PAPER,
                   needs_checkpoint=True)
def m2d(ckpt=None, max_windows: int = 64, any_method: bool = False) -> M2DUpstream:
    """any_method=True loads the encoder of a checkpoint another method (m2dx, score) wrote."""
    path = ckpt or latest_checkpoint("m2d")
    _check_method(path, "m2d", any_method)
    return load_bundle(path, max_windows=max_windows)


@register_upstream(
    "m2dx",
    description="M2D-X further pretrained with an extra task and background noise (bench pretrain m2dx)",
    paper=PAPER,
    needs_checkpoint=True,
)
def m2dx(ckpt=None, max_windows: int = 64, any_method: bool = False) -> M2DUpstream:
    """any_method=True loads the encoder of a checkpoint another method (m2d, score) wrote."""
    path = ckpt or latest_checkpoint("m2dx")
    _check_method(path, "m2dx", any_method)
    return load_bundle(path, max_windows=max_windows)
