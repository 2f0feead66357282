"""`bench run`: one upstream x one task x one protocol -> one result record.

Order of work: validate the request (before loading anything heavy), load the upstream, find or
build the dataset, hand over to the task family's protocol code, then write the record. The record
is written only after everything succeeded, so an interrupted run leaves no partial record (and
the embedding cache, built atomically, keeps whatever extraction had finished).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

import upstreams
from tasks.registry import TASKS, get_task

from .errors import UserError
from .protocols import UNTRAINED_PROTOCOLS, family_of, run_protocol
from .results.records import ResultRecord, RunTimer, check_results_writable, write_record
from .results.stats import Unit, check_seeds, summarise_units, units_from

__all__ = ["RunRequest", "run", "resolve_device"]



@dataclass
class RunRequest:
    upstream: str
    task: str
    protocol: str | None = None
    ckpt: str | None = None
    upstream_options: dict = field(default_factory=dict)
    dataset: str | None = None  # path to a real corpus; None = built-in benchmark of `profile`
    profile: str = "mini"
    data_root: str | None = None
    results: str = "results"
    seed: int = 0
    seeds: list[int] | None = None  # several head seeds -> one record with every seed's score (None: [seed])
    lrs: list[float] | None = None
    layer: int = -1
    precision: str = "fp32"
    device: str = "auto"
    batch_seconds: float = 120.0
    skip_bad: bool = False
    task_options: dict = field(default_factory=dict)  # e.g. {"classes": "all35"} for speech_commands
    finetune: dict = field(default_factory=dict)  # upstream_lr_scale, time_mask, freq_mask
    # user caps on head training, recorded: max_epochs / patience (clip tasks, epochs), max_steps / patience (pr, asr)
    budget: dict = field(default_factory=dict)
    folds: list[str] | None = None  # evaluate only these folds (e.g. ["fold1"]); recorded in the result
    cache_root: str | None = None
    progress: bool = True
    write: bool = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name}: not a device name; use cpu, cuda or cuda:N (default auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif device.type != "cpu":
        backend = getattr(torch, device.type, None)
        if not (backend is not None and hasattr(backend, "is_available") and backend.is_available()):
            raise UserError(f"--device {name}: no {device.type} device on this machine; use cpu or cuda")
    return device


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_ad_hoc_upstream(name: str) -> None:
    """`--upstream package.module:attr` must name an upstream factory: a callable taking `ckpt=`."""
    if ":" not in name or name.startswith(("hear:", "s3prl:")):
        return
    from upstreams.registry import info

    entry = info(name)  # unknown module / attribute: UnknownUpstreamError, one line
    if entry.source != "ad-hoc":
        return
    try:
        params = inspect.signature(entry.factory).parameters.values()
    except (TypeError, ValueError):
        return  # no signature to check (a builtin or C callable): the call below decides
    if not any(p.name == "ckpt" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise UserError(f"--upstream {name}: not an upstream factory (a factory takes ckpt=None and options as "
                        f"keywords and returns a torch.nn.Module; see `bench list upstreams`)")


def _check_budget(req: RunRequest, spec, protocol: str) -> None:
    """--max-epochs / --max-steps / --patience: whole numbers >= 1, and only where the protocol trains that way
    (the task's family in `bench.protocols` says which caps apply)."""
    if not req.budget:
        return
    family = family_of(spec)
    for key, value in req.budget.items():
        flag = "--" + key.replace("_", "-")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{flag} {value}: give a whole number >= 1")
        if protocol in UNTRAINED_PROTOCOLS or not family.budget_keys:
            raise UserError(f"{flag}: {req.task} {protocol} trains nothing, so there is no budget to cap")
        if key not in family.budget_keys:
            other = "max_steps" if key == "max_epochs" else "max_epochs"
            trained = [t for t, s in TASKS.items() if other in family_of(s).budget_keys]
            unit = family_of(TASKS[trained[0]]).budget_unit if trained else ""
            raise UserError(f"{flag} does not apply to --task {req.task}: use --{other.replace('_', '-')} "
                            f"({', '.join(trained)} train by {unit})")


def _validate(req: RunRequest):
    try:
        spec = get_task(req.task)
    except KeyError as exc:
        raise UserError(exc.args[0]) from exc
    protocol = req.protocol or spec.default_protocol
    if protocol not in spec.protocols:
        raise UserError(f"task '{req.task}' has no protocol '{protocol}'; choose one of {', '.join(spec.protocols)}")
    if req.profile not in ("tiny", "mini"):
        raise UserError(f"--profile must be tiny or mini, got '{req.profile}'")
    if req.dataset is not None and not Path(req.dataset).exists():
        raise UserError(f"--dataset {req.dataset}: no such directory")
    check_seeds(req.seeds)
    if req.lrs is not None:
        bad = [lr for lr in req.lrs if not (_finite(lr) and lr > 0)]
        if not req.lrs or bad:
            raise UserError(f"--lr {' '.join(str(lr) for lr in (bad or req.lrs))}: learning rates must be finite "
                            f"numbers > 0, e.g. --lr 1e-4 1e-3")
    if not (_finite(req.batch_seconds) and req.batch_seconds > 0):
        raise UserError(f"--batch-seconds {req.batch_seconds}: must be a finite number of seconds > 0 (default 120)")
    scale = req.finetune.get("upstream_lr_scale", 0.1)
    if not (_finite(scale) and scale > 0):
        raise UserError(f"--upstream-lr-scale {scale}: must be a finite number > 0 (default 0.1)")
    _check_budget(req, spec, protocol)
    beam = req.task_options.get("beam_size")
    if beam is not None and (not isinstance(beam, int) or beam < 1):
        raise UserError(f"--beam-size {beam}: must be a whole number >= 1 (default 5)")
    if req.write:
        check_results_writable(req.results, req.task)
    if protocol != "finetune":
        from .cache import cache_root
        from upstreams.fileio import writable_problem

        problem = writable_problem(cache_root(req.cache_root))
        if problem:
            raise UserError(f"--cache-root {req.cache_root or cache_root(None)}: {problem}; choose a writable "
                            f"embedding cache (--cache-root DIR or $BENCH_CACHE)")
    _check_ad_hoc_upstream(req.upstream)
    return spec, protocol


def _check_layer(req: RunRequest, protocol: str, upstream) -> None:
    """A one-layer protocol's --layer must exist in this upstream: checked before any extraction."""
    if protocol not in ("linear", "knn", "mlp"):
        return
    n = int(getattr(upstream, "num_layers", 0) or 0)
    if n and not -n <= req.layer < n:
        raise UserError(f"--layer {req.layer} is out of range: upstream '{req.upstream}' has {n} layer(s); choose one of "
                        f"{-n}..{n - 1} (-1 = the last)")


def _load_upstream(req: RunRequest, device):
    try:
        upstream = upstreams.load(req.upstream, ckpt=req.ckpt, **req.upstream_options)
    except TypeError as exc:
        if ":" in req.upstream and not isinstance(exc, upstreams.UpstreamError):
            raise UserError(f"--upstream {req.upstream}: not an upstream factory ({exc})") from None
        raise
    if not isinstance(upstream, torch.nn.Module):
        raise UserError(f"--upstream {req.upstream}: the factory returned {type(upstream).__name__}, not an upstream")
    return upstream.to(device).eval()


def ensure_dataset(spec, req: RunRequest, log=print) -> None:
    """Build the task's mini-benchmark dataset for the profile if it is missing (no-op with --dataset)."""
    if req.dataset is None:
        from tasks.data import build

        build(req.profile, root=req.data_root, only=[spec.dataset], log=log)


def run(req: RunRequest, log=print) -> tuple[ResultRecord, Path | None]:
    spec, protocol = _validate(req)
    timer = RunTimer()
    device = resolve_device(req.device)
    upstream = _load_upstream(req, device)
    _check_layer(req, protocol, upstream)
    ensure_dataset(spec, req, log)
    t0 = time.perf_counter()
    seeds = list(req.seeds) if req.seeds else [req.seed]
    if protocol in UNTRAINED_PROTOCOLS and len(seeds) > 1:
        log(f"[run] {req.task} {protocol} trains nothing: every seed gives the same score, so it runs once")
        seeds = seeds[:1]
    partials = []
    for seed in seeds:
        if len(seeds) > 1:
            log(f"[run] seed {seed} ({len(partials) + 1}/{len(seeds)})")
        partials.append(run_protocol(replace(req, seed=seed, seeds=None), spec, protocol, upstream, device, log))
    partial = merge_seeds(seeds, partials)
    ident = upstream.describe()
    record = ResultRecord(
        upstream=req.upstream,
        task=req.task,
        protocol=protocol,
        metric=spec.metric,
        score=partial.score,
        higher_is_better=spec.higher_is_better,
        split=partial.split,
        secondary=partial.secondary,
        selection=partial.selection,
        lr=partial.lr,
        seed=seeds[0],
        seeds=seeds,
        upstream_options=_recorded_options(ident, req.upstream_options),
        checkpoint=ident.get("checkpoint"),
        checkpoint_sha256=ident.get("checkpoint_sha256"),
        dataset=partial.dataset,
        details={**partial.details, "upstream": ident, "precision": req.precision, "device": str(device),
                 "eval_seconds": round(time.perf_counter() - t0, 2)},
    )
    timer.finish(record)
    path = write_record(record, req.results) if req.write else None
    return record, path


def _recorded_options(ident: dict, requested: dict) -> dict:
    """The upstream's options as the record keeps them: a step-0 twin's `like` path becomes the sha256 of
    the checkpoint it mirrors (records carry no machine paths; the hash is the identity)."""
    options = {**ident.get("options", {}), **requested}
    if "like" in options and options.get("like_sha256"):
        options["like"] = f"sha256:{options['like_sha256']}"
    return options


def units_of(partial, seed: int) -> list[Unit]:
    """The (seed, fold) test scores of one seed's result (`bench.results.stats.units_from`)."""
    return units_from(seed, partial.score, partial.secondary, partial.details.get("per_fold"))


def merge_seeds(seeds: list[int], partials: list):
    """One result from several head seeds: the score is the mean over seeds, `secondary` holds every
    unit, the per-seed scores and the seed statistics; numeric secondaries are averaged over seeds."""
    units = [u for s, p in zip(seeds, partials) for u in units_of(p, s)]
    summary = summarise_units(units)
    first = partials[0]
    secondary = dict(first.secondary)
    if len(partials) > 1:
        for k, v in first.secondary.items():
            vals = [p.secondary.get(k) for p in partials]
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
                secondary[k] = float(sum(vals) / len(vals))
    secondary.update({
        "units": [u.to_dict() for u in units],
        "per_seed": [{"seed": s, "score": p.score, "lr": p.lr, "fold_std": p.secondary.get("std")}
                     for s, p in zip(seeds, partials)],
        "n_seeds": summary.n_seeds,
        "score_std": summary.score_std if summary.score_std == summary.score_std else None,
        "ci95": [summary.ci95_low, summary.ci95_high] if summary.ci95_low == summary.ci95_low else None,
        "ci_method": summary.method,
    })
    score = summary.score if len(partials) > 1 else first.score
    lrs = [p.lr for p in partials]
    selection = dict(first.selection)
    details = dict(first.details)
    if len(partials) > 1:
        selection["per_seed"] = [{"seed": s, "chosen": p.selection.get("chosen"), "grid": p.selection.get("grid")}
                                 for s, p in zip(seeds, partials)]
        details["per_seed"] = [{"seed": s, **{k: p.details[k] for k in ("per_fold", "layer_weights", "chosen_layer")
                                               if k in p.details}} for s, p in zip(seeds, partials)]
    lr = max(set(lrs), key=lrs.count) if all(x is not None for x in lrs) else first.lr
    return replace(first, score=score, lr=lr, secondary=secondary, selection=selection, details=details)
