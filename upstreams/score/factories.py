"""The `score` upstream: a SCORE-fine-tuned student, from `--ckpt` or the latest `bench pretrain score` run."""

from __future__ import annotations

from ..checkpoints import load_state_strict, read_checkpoint
from ..errors import CheckpointError
from ..fileio import sha256_file
from ..registry import register_upstream
from ..runs import latest_checkpoint


@register_upstream(
    "score",
    description="SCORE-fine-tuned upstream (bench pretrain score --base m2d): top layers tuned with soft-DTW",
    paper="Meghanani & Hain, SCORE, ICASSP 2024 (arXiv 2403.06260)",
    needs_checkpoint=True,
)
def score(ckpt=None, max_windows: int = 64):
    path = ckpt or latest_checkpoint("score")
    bundle = read_checkpoint(path)
    prov = bundle.get("score")
    if not isinstance(prov, dict):
        raise CheckpointError(f"{path} is not a SCORE checkpoint (no 'score' provenance); make one with `bench pretrain score`")
    if "encoder" in bundle:
        from ..m2d.upstream import from_bundle

        model = from_bundle(bundle, source=path, max_windows=max_windows)
    elif "upstream_state" in bundle:
        import upstreams

        from .pretrain import parse_options

        model = upstreams.load(prov["base"], ckpt=prov.get("base_checkpoint"), **parse_options(prov.get("base_options", ())))
        load_state_strict(model, bundle["upstream_state"], path)
    else:
        raise CheckpointError(f"{path}: SCORE checkpoint holds neither an encoder bundle nor an upstream state")
    model.checkpoint_path = str(path)
    model.checkpoint_sha256 = sha256_file(path)
    model.options = {"base": prov["base"], "base_checkpoint_sha256": prov.get("base_checkpoint_sha256"),
                     "top_layers": prov.get("top_layers")}
    return model
