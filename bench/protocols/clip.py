"""Clip tasks (ESC-50, Speech Commands, ICBHI): embedding cache + frozen protocols, or fine-tuning."""

from __future__ import annotations

from dataclasses import replace

from tasks.clip_tasks import load_clip_task

from ..cache import EmbeddingCache
from ..errors import UserError
from ..extract import ExtractionSettings, autocast_context, extract_to, load_batch
from .clip_heads import budget_for, run_finetune, run_frozen
from .knn_mlp import run_knn, run_mlp
from .partial import PartialResult, dataset_record

__all__ = ["run_clip"]


HEAD_OPTIONS = {"normalize_layers"}  # task options of the head alone: no effect on the data or the features


def run_clip(req, spec, protocol, upstream, device, log=print) -> PartialResult:
    data_options = {k: v for k, v in req.task_options.items() if k not in HEAD_OPTIONS}
    task = load_clip_task(req.task, req.dataset, profile=req.profile, root=req.data_root, skip_bad=req.skip_bad,
                          **data_options)
    if req.folds:
        known = [f.name for f in task.folds]
        unknown = sorted(set(req.folds) - set(known))
        if unknown:
            raise UserError(f"--folds {' '.join(unknown)}: {task.name} has folds {', '.join(known)}")
        task.folds = [f for f in task.folds if f.name in req.folds]
        task.notes["folds_evaluated"] = [f.name for f in task.folds]
    dataset = dataset_record(spec, req, task.identity or task.dataset_dir, task.skipped)
    budget = budget_for(req.profile if req.dataset is None else None, protocol)
    if req.budget:  # the user's caps (`bench run --max-epochs/--patience`), recorded with the budget below
        budget = replace(budget, **{k: v for k, v in req.budget.items() if k in ("max_epochs", "patience")})
    settings = ExtractionSettings("mean", task.clip_seconds, task.pad_mode, req.precision)
    if protocol in ("linear", "weighted", "knn", "mlp"):  # frozen: one cache entry serves all four
        ident = upstream.describe()
        material = {
            "upstream": {k: ident[k] for k in ("name", "options", "checkpoint_sha256")},
            "task": task.name,
            "task_options": data_options,
            "dataset_manifest": dataset["manifest_sha256"],
            "audio_sha256": task.identity.sha256_of(e.path for e in task.examples),  # the bytes extracted
            "settings": settings.key(),
        }
        entry = EmbeddingCache(req.cache_root).get_or_create(
            material,
            lambda tmp: extract_to(tmp, upstream, task.examples, settings, req.batch_seconds, req.progress),
            [e.key for e in task.examples],
        )
        log(f"[run] embeddings {'reused from' if entry.hit else 'written to'} cache {entry.path}")
        # default: on when there are layers to mix (docs/protocols.md, "Fair comparisons": measured on fbank, random, m2d)
        normalize = protocol == "weighted" and bool(req.task_options.get("normalize_layers", upstream.num_layers > 1))
        if protocol == "knn":
            out = run_knn(task, entry.pooled(), req.layer)
        elif protocol == "mlp":
            out = run_mlp(task, entry.pooled(), req.lrs, req.seed, req.layer, budget, req.progress)
        else:
            out = run_frozen(task, entry.pooled(layer_normed=normalize), protocol, req.lrs, req.seed, req.layer,
                             budget, req.progress)
        if protocol == "weighted":
            out.details["normalize_layers"] = normalize
            out.details["featurizer"] = ("softmax-weighted sum of all layers, each frame layer-normed first (s3prl's "
                                         "upstream_feature_normalize)" if normalize else
                                         "softmax-weighted sum of all raw layers (s3prl Featurizer default)")
        out.details["cache"] = {"hit": entry.hit, "key": entry.meta["key"][:16],
                                "extract_seconds": entry.meta.get("build_seconds")}
    else:
        wavs = load_batch(task.examples, range(len(task.examples)), upstream.sample_rate, settings)
        fopts = req.finetune
        out = run_finetune(
            task, lambda: upstream, wavs, req.lrs, req.seed, budget,
            upstream_lr_scale=float(fopts.get("upstream_lr_scale", 0.1)),
            autocast=(lambda: autocast_context(device, "bf16")) if req.precision == "bf16" else None,
            batch_seconds=req.batch_seconds / 4, time_mask=int(fopts.get("time_mask", 0)),
            freq_mask=int(fopts.get("freq_mask", 0)), progress=req.progress,
        )
    out.details["budget"] = {"max_epochs": budget.max_epochs, "patience": budget.patience,
                             "batch_size": budget.batch_size, "set_by_user": sorted(req.budget)}
    split = f"test folds ({len(task.folds)}-fold CV)" if len(task.folds) > 1 else f"test ({task.folds[0].name})"
    return PartialResult(out.score, out.lr, split, out.secondary, out.selection, out.details, dataset)
