"""`bench run`: one upstream x one task x one protocol -> one result record.

Order of work: validate the request (before loading anything heavy), load the upstream, find or
build the dataset, hand over to the task family's protocol code, then write the record. The record
is written only after everything succeeded, so an interrupted run leaves no partial record (and
the embedding cache, built atomically, keeps whatever extraction had finished).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import upstreams
from tasks.registry import get_task

from .errors import UserError
from .records import ResultRecord, RunTimer, write_record

__all__ = ["RunRequest", "run", "resolve_device"]

CLIP_TASKS = ("esc50", "speech_commands", "icbhi")
SPEECH_TASKS = ("asr", "pr", "qbe")


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
    lrs: list[float] | None = None
    layer: int = -1
    precision: str = "fp32"
    device: str = "auto"
    batch_seconds: float = 120.0
    skip_bad: bool = False
    task_options: dict = field(default_factory=dict)  # e.g. {"classes": "all35"} for speech_commands
    finetune: dict = field(default_factory=dict)  # upstream_lr_scale, time_mask, freq_mask
    folds: list[str] | None = None  # evaluate only these folds (e.g. ["fold1"]); recorded in the result
    cache_root: str | None = None
    progress: bool = True
    write: bool = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


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
    if req.lrs is not None and (not req.lrs or any(lr <= 0 for lr in req.lrs)):
        raise UserError(f"--lr values must be positive, got {req.lrs}")
    return spec, protocol


def ensure_dataset(spec, req: RunRequest, log=print) -> None:
    """Build the task's mini-benchmark dataset for the profile if it is missing (no-op with --dataset)."""
    if req.dataset is None:
        from tasks.data import build

        build(req.profile, root=req.data_root, only=[spec.dataset], log=log)


def run(req: RunRequest, log=print) -> tuple[ResultRecord, Path | None]:
    spec, protocol = _validate(req)
    timer = RunTimer()
    device = resolve_device(req.device)
    upstream = upstreams.load(req.upstream, ckpt=req.ckpt, **req.upstream_options).to(device).eval()
    ensure_dataset(spec, req, log)
    t0 = time.perf_counter()
    if req.task in CLIP_TASKS:
        from .clip_runner import run_clip

        partial = run_clip(req, spec, protocol, upstream, device, log)
    else:
        from .speech_runner import run_speech

        partial = run_speech(req, spec, protocol, upstream, device, log)
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
        seed=req.seed,
        upstream_options={**ident.get("options", {}), **req.upstream_options},
        checkpoint=ident.get("checkpoint"),
        checkpoint_sha256=ident.get("checkpoint_sha256"),
        dataset=partial.dataset,
        details={**partial.details, "upstream": ident, "precision": req.precision, "device": str(device),
                 "eval_seconds": round(time.perf_counter() - t0, 2)},
    )
    timer.finish(record)
    path = write_record(record, req.results) if req.write else None
    return record, path
