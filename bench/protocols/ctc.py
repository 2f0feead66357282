"""PR and ASR: frozen (`weighted`, `linear`) and `finetune` protocols with a learning-rate sweep.

Per learning rate, one CTC head is trained on train-clean-100 with early stopping on dev-clean
(greedy decoding, PER or WER). The learning rate with the lowest dev error is chosen; only then
is its best state decoded on test-clean (the score) and on test-asterisk (secondary, when the
corpus has it). Test utterances are never decoded for the other grid points.

Head sizes and step budgets depend on the profile (`SETTINGS`): `full` (a real corpus given with
`--dataset`) is SUPERB's recipe; `mini` shrinks the ASR BiLSTM, the step budgets and the grid (2 higher
head learning rates, patience only after a warm-up) so that one upstream x one task fits in minutes on
2 CPU cores; `tiny` runs in seconds for the tests. Every record carries the head, budget and grid used.

Frozen features come from the embedding cache, extracted once per upstream for all LibriSpeech
splits together (keyed by corpus and splits, not by task, so PR, ASR, both protocols and every
learning rate share one extraction). A corpus whose features would exceed `MAX_CACHE_BYTES` (the
real train-clean-100 with a 12-layer model: hundreds of GB) is instead run through the frozen
upstream online, batch by batch, as s3prl does.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from tasks.ctc import BeamSearchDecoder, greedy_decode, min_frames
from tasks.ctc_fit import CTCBudget, FrameSource, WaveSource, decode, fit_ctc
from tasks.metrics.edit_distance import cer, per, wer
from tasks.speech_heads import (SUPERB_ASR_HEAD, SUPERB_PR_HEAD, CTCHead, FrozenCTC, HeadConfig, Standardize,
                                UpstreamCTC, WeightedSum, output_lengths)
from tasks.speech_tasks import SECONDARY_TEST, CTCTask, corpus_examples, load_ctc_task
from upstreams.batching import batches_by_duration
from upstreams.threads import torch_threads

from ..cache import EmbeddingCache
from .partial import PartialResult, dataset_record
from ..errors import UserError
from ..extract import ExtractionSettings, autocast_context, extract_to

__all__ = ["SpeechSettings", "SETTINGS", "settings_for", "effective_head", "MAX_CACHE_BYTES", "run_ctc"]

MAX_CACHE_BYTES = 40e9  # above this, frozen features are computed online instead of cached
_STATS_UTTERANCES = 256  # linear protocol, online: train utterances sampled for the mean / std


@dataclass(frozen=True)
class SpeechSettings:
    head: HeadConfig
    budget: CTCBudget
    lrs: tuple[float, ...]  # default grid (head lr; the upstream gets lr x upstream_lr_scale)
    # `weighted`: layer norm of each layer before the sum (s3prl's `upstream_feature_normalize`). None =
    # on for upstreams with several layers: a ViT's layers differ in scale (patch embeddings vs
    # post-LayerNorm blocks) and the raw sum lets the largest layer decide; a one-layer upstream keeps its
    # features (nothing to mix). True = every upstream (mini ASR, measured below).
    normalize_layers: bool | None = None
    rank_keys: tuple[str, ...] = ()  # dev selection order; () = the task's error rate first


def _small_asr_head(project_dim: int, units: int, dropout: float) -> HeadConfig:
    """SUPERB's ASR head with fewer units, running at 20 ms frames at most (s3prl's `total_rate`)."""
    return replace(SUPERB_ASR_HEAD, project_dim=project_dim).with_rnn(
        dim=[units, units], dropout=[dropout, dropout], total_rate=320)


# Mini ASR, measured on mini (2 CPU cores): with 200 steps of 160 s batches and SUPERB's plain weighted
# sum every upstream stayed on CTC's blank plateau (dev CTC loss ~2.9, the character unigram entropy;
# WER 97-100, CER 97-100; 6-19 min per upstream). Many small steps are cheaper and learn more (fbank,
# standardised: dev CER 55 after 1000 steps of 20 s, 116 s), but the plain weighted sum of raw log-mel
# or of a small ViT's hidden states still did not leave the plateau in 2000 steps; with each layer
# layer-normed first (s3prl's `upstream_feature_normalize`) fbank reached dev CER 60 and random 61 in
# 2000 steps (~140-200 s per learning rate). WER stays near 100 at this size, so selection ranks dev
# CER first; the record's headline is still WER, with CER beside it.
ASR_MINI_BUDGET = CTCBudget(2000, 200, 3, 20.0, 1000)
ASR_MINI_LRS = (3e-3, 1e-2)

# Budgets: `full` is SUPERB (PR 100k steps, ASR 200k, batches of ~32 LibriSpeech utterances, a grid
# of 3 learning rates centred on SUPERB's value: PR 1e-2, ASR 1e-4), early stopping from the start.
# `mini` is sized for ~5 minutes of head training per upstream x task on 2 shared CPU cores (see the
# speech section of docs/protocols.md). Measured on mini: CTC first sits on the blank plateau (every hypothesis
# empty, 100 % errors) for a few hundred steps; SUPERB's rates and patience from step 0 stopped runs
# there. So mini uses higher head rates, 2 grid points, patience counted only after `min_steps`, and
# for ASR many small steps with layer-normed layers (ASR_MINI_BUDGET above). Runs stuck on the plateau
# are still ranked by their dev CTC loss.
SETTINGS: dict[tuple[str, str, str], SpeechSettings] = {
    ("pr", "full", "frozen"): SpeechSettings(SUPERB_PR_HEAD, CTCBudget(100_000, 1000, 20, 400.0), (3e-3, 1e-2, 3e-2)),
    ("pr", "full", "finetune"): SpeechSettings(SUPERB_PR_HEAD, CTCBudget(100_000, 1000, 20, 400.0), (3e-3, 1e-2, 3e-2)),
    ("asr", "full", "frozen"): SpeechSettings(SUPERB_ASR_HEAD, CTCBudget(200_000, 2000, 10, 400.0), (3e-5, 1e-4, 3e-4)),
    ("asr", "full", "finetune"): SpeechSettings(SUPERB_ASR_HEAD, CTCBudget(200_000, 2000, 10, 400.0),
                                                (3e-5, 1e-4, 3e-4)),
    ("pr", "mini", "frozen"): SpeechSettings(SUPERB_PR_HEAD, CTCBudget(800, 50, 3, 100.0, 300), (3e-3, 1e-2)),
    ("pr", "mini", "finetune"): SpeechSettings(SUPERB_PR_HEAD, CTCBudget(40, 20, 1, 20.0), (3e-3, 1e-2, 3e-2)),
    ("asr", "mini", "frozen"): SpeechSettings(_small_asr_head(128, 128, 0.2), ASR_MINI_BUDGET, ASR_MINI_LRS,
                                              normalize_layers=True, rank_keys=("cer", "wer", "ctc_loss")),
    ("asr", "mini", "finetune"): SpeechSettings(_small_asr_head(128, 128, 0.2), CTCBudget(40, 20, 1, 20.0),
                                                (3e-4, 1e-3, 3e-3)),
    ("pr", "tiny", "frozen"): SpeechSettings(SUPERB_PR_HEAD, CTCBudget(100, 20, 2, 20.0), (3e-3, 1e-2, 3e-2)),
    ("pr", "tiny", "finetune"): SpeechSettings(SUPERB_PR_HEAD, CTCBudget(4, 2, 1, 8.0), (3e-3, 1e-2, 3e-2)),
    ("asr", "tiny", "frozen"): SpeechSettings(_small_asr_head(64, 64, 0.0), CTCBudget(30, 15, 1, 20.0),
                                              (1e-3, 3e-3, 1e-2)),
    ("asr", "tiny", "finetune"): SpeechSettings(_small_asr_head(64, 64, 0.0), CTCBudget(4, 2, 1, 8.0),
                                                (1e-3, 3e-3, 1e-2)),
}


def settings_for(task: str, profile: str | None, protocol: str) -> SpeechSettings:
    """`profile` None (a real corpus) selects SUPERB's `full` settings."""
    kind = "finetune" if protocol == "finetune" else "frozen"
    return SETTINGS[(task, profile if profile in ("tiny", "mini") else "full", kind)]


def effective_head(config: HeadConfig, upstream_rate: int) -> HeadConfig:
    """Resolve `total_rate` for this upstream: a whole multiple of its frame rate (s3prl's RNNs concat
    `round(total_rate / upstream_rate)` frames, and 0 would be invalid), or -1 = none."""
    total = config.rnn.get("total_rate", -1) if config.select == "RNNs" else -1
    if total == -1:
        return config
    return config.with_rnn(total_rate=int(upstream_rate) * max(1, round(total / upstream_rate)))


def _torch_threads(n: int | None):
    """CTC training and decoding on CPU run single-threaded (`upstreams.threads`): the LSTM recursion
    and a 256-unit projector are many small sequential ops. Measured here (2 cores, load average
    3-7): a 2 x 256-unit BiLSTM step on 16 x 300 frames took 5 s with 1 thread and 18-55 s with 2.
    Feature extraction (large upstream matmuls) keeps torch's thread count."""
    return torch_threads(n)


class _SharedCPU:
    """Intra-op threads for feature extraction that follow what other processes leave free.

    On a shared machine, torch's default (one thread per core) is the worst choice as soon as another
    job occupies a core: every parallel region waits for a thread that is not scheduled. Measured here
    (2 cores, one busy-looping process): 80-dim fbank of 1086 s of LibriSpeech-mini audio took 14.3 s
    with 2 threads and 1.6 s with 1 (1.6 s with 2 on an idle machine); the mini M2D 8.6 s with 1 thread
    and 15 s with 2 on 218 s of audio (2.8 s with 2 on an idle machine). That is what made the fbank
    cache of mini take 130-450 s instead of ~25 s. So the count is re-chosen every few seconds from
    /proc/stat: cores minus the CPU time used by other processes (ours excluded), at least 1.
    """

    def __init__(self, every_seconds: float = 5.0):
        self.limit = torch.get_num_threads()
        self.every = every_seconds
        self.choices: list[int] = []
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        """(wall, busy CPU seconds of the machine, CPU seconds of this process), or None off Linux."""
        import os
        import time

        try:
            with open("/proc/stat") as fh:
                fields = [float(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        own = os.times()
        return time.monotonic(), (sum(fields[:8]) - idle) / tick, own.user + own.system

    def threads(self) -> int:
        import os

        now = self._sample()
        if now is None or self._last is None:
            return self.limit
        wall, busy, own = (a - b for a, b in zip(now, self._last))
        if wall <= 0.2:
            return torch.get_num_threads()
        self._last = now
        cores = os.cpu_count() or 1
        others = max(0.0, busy - own) / wall
        return max(1, min(self.limit, int(cores - others + 0.3)))

    def apply(self, _batch: int | None = None) -> None:
        if self._last is not None and self._sample()[0] - self._last[0] < self.every and self.choices:
            return
        n = self.threads()
        torch.set_num_threads(n)
        self.choices.append(n)


@contextlib.contextmanager
def _adaptive_threads():
    """`_SharedCPU` for the enclosed extraction; torch's thread count is restored afterwards."""
    previous = torch.get_num_threads()
    cpu = _SharedCPU()
    import time

    time.sleep(0.5)  # a first sample of what the others use
    cpu.apply()
    try:
        yield cpu
    finally:
        torch.set_num_threads(previous)


# -- scoring ------------------------------------------------------------------------------------

def _decoder_for(task: CTCTask, options: dict) -> tuple[Callable, str]:
    name = options.get("decoder", "greedy")
    if name == "greedy":
        return greedy_decode, "greedy"
    if name == "beam":
        if task.name != "asr":
            raise UserError("beam search is offered for asr only (SUPERB decodes PR greedily)")
        size = int(options.get("beam_size", 5))
        return BeamSearchDecoder(task.vocab, beam_size=size), f"beam search (size {size}, no LM, lexicon-free)"
    raise UserError(f"decoder must be 'greedy' or 'beam', got {name!r}")


def _error_rates(task: CTCTask, split: str, hyp_ids: list[list[int]]) -> dict:
    refs = task.references(split)
    hyps = [task.vocab.decode(ids) for ids in hyp_ids]
    if task.name == "pr":
        r = per(refs, hyps)
        return {"per": r.rate, "per_detail": r.as_dict(), "_hyps": hyps}
    w, c = wer(refs, hyps), cer(refs, hyps)
    return {"wer": w.rate, "cer": c.rate, "wer_detail": w.as_dict(), "_hyps": hyps}


# -- feature sources ----------------------------------------------------------------------------

@dataclass
class _Sources:
    """Per split role, the callable batch source; how features are produced; record details."""

    by_role: dict
    frozen_kind: str  # "cache" | "online" | "finetune"
    details: dict


def _estimated_cache_bytes(upstream, examples) -> float:
    frames = sum(upstream.num_frames(int(round(e.duration() * upstream.sample_rate))) for e in examples)
    return float(frames) * upstream.num_layers * int(upstream.hidden_sizes[-1]) * 2


def _cached_sources(req, task: CTCTask, upstream, dataset_hash: str, layer: int | None, log) -> _Sources:
    corpus = corpus_examples(req.dataset, profile=req.profile, root=req.data_root, skip_bad=req.skip_bad)
    examples = [e for role in corpus for e in corpus[role]]
    settings = ExtractionSettings("frames", None, "repeat", req.precision)
    ident = upstream.describe()
    material = {
        "upstream": {k: ident[k] for k in ("name", "options", "checkpoint_sha256")},
        "task": "librispeech-frames",  # shared by pr and asr
        "splits": {role: corpus[role].stats.get("split") for role in corpus},
        "dataset_manifest": dataset_hash,
        "audio_sha256": task.identity.sha256_of(e.path for e in examples),  # the bytes extracted
        "settings": settings.key(),
    }
    threads: list[int] = []

    def build(tmp):
        with _adaptive_threads() as cpu:
            out = extract_to(tmp, upstream, examples, settings, req.batch_seconds, req.progress, on_batch=cpu.apply)
            threads.extend(cpu.choices)
        return out

    entry = EmbeddingCache(req.cache_root).get_or_create(material, build, [e.key for e in examples])
    log(f"[run] frame features {'reused from' if entry.hit else 'written to'} cache {entry.path}")
    row_of = {e.key: i for i, e in enumerate(examples)}
    feats, index = entry.features, entry.index
    by_role = {role: FrameSource(feats, index, [row_of[e.key] for e in exs], layer)
               for role, exs in task.splits.items()}
    frames_per_second = upstream.sample_rate / upstream.downsample_rate
    return _Sources(by_role, "cache", {"cache": {"hit": entry.hit, "key": entry.meta["key"][:16],
                                                     "extract_seconds": entry.meta.get("build_seconds"),
                                                     **({"extract_threads": sorted(set(threads))} if threads else {}),
                                                     "frames_per_second": frames_per_second}})


def _wave_sources(task: CTCTask, upstream, kind: str) -> _Sources:
    by_role = {role: WaveSource(exs, upstream.sample_rate) for role, exs in task.splits.items()}
    return _Sources(by_role, kind, {})


def _train_stats_cached(source: FrameSource, layer: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    total, s, ss = 0, None, None
    for chunk in source.iter_layer_chunks(layer):
        c = chunk.astype(np.float64)
        s = c.sum(0) if s is None else s + c.sum(0)
        ss = (c * c).sum(0) if ss is None else ss + (c * c).sum(0)
        total += len(c)
    mean = s / total
    std = np.sqrt(np.maximum(ss / total - mean * mean, 0.0))
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float(), total


@torch.no_grad()
def _train_stats_online(upstream, source: WaveSource, layer: int, seed: int, budget: int) -> tuple:
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(source), size=min(_STATS_UTTERANCES, len(source)), replace=False).tolist())
    total, s, ss = 0, 0.0, 0.0
    lengths = [source.lengths()[i] for i in pick]
    for batch in batches_by_duration(lengths, budget):
        wavs = source([pick[i] for i in batch])[0]
        out = upstream(wavs)
        for j, n in enumerate(out.lengths.tolist()):
            h = out.hidden_states[layer][j, :n].double().cpu()
            s, ss, total = s + h.sum(0), ss + (h * h).sum(0), total + n
    mean = s / total
    return mean.float(), (ss / total - mean * mean).clamp_min(0).sqrt().float(), total


def _labels_vs_frames(head_cfg: HeadConfig, upstream, sources: _Sources, targets: list[list[int]], log) -> dict:
    """How many training utterances have more labels than the head has output frames.

    CTC cannot emit those (their loss is infinite; `zero_infinity` drops them), which happens when an
    upstream's frames are too coarse for the label rate (e.g. 160 ms frames against ~12 phones/s).
    """
    train = sources.by_role["train"]
    frames = (train.lengths() if sources.frozen_kind == "cache"
              else [upstream.num_frames(n) for n in train.lengths()])
    out = output_lengths(head_cfg, upstream.downsample_rate, torch.tensor(frames)).tolist()
    short = sum(1 for n, t in zip(out, targets) if n < min_frames(t))
    fraction = short / max(1, len(targets))
    if fraction > 0.05:
        log(f"[run] warning: {fraction:.0%} of training utterances have more labels than the head's output frames "
            f"({upstream.sample_rate / upstream.downsample_rate:g} upstream frames/s); CTC ignores them")
    return {"train_utterances_too_short": short, "fraction": round(fraction, 4),
            "output_frames_per_second": round(sum(out) / max(1, sum(frames)) * upstream.sample_rate
                                              / upstream.downsample_rate, 2)}


# -- the protocol --------------------------------------------------------------------------------

def _capped(budget: CTCBudget, caps: dict) -> CTCBudget:
    """The profile's budget under the user's `--max-steps/--patience` (a real-corpus PR run is SUPERB's 100k
    steps otherwise); evaluation interval and warm-up shrink with a shorter run so it still selects on dev."""
    if not caps:
        return budget
    steps = int(caps.get("max_steps", budget.max_steps))
    return replace(budget, max_steps=steps, patience=int(caps.get("patience", budget.patience)),
                   eval_every=max(1, min(budget.eval_every, steps)), min_steps=min(budget.min_steps, steps))


def run_ctc(req, spec, protocol: str, upstream, device, log=print) -> PartialResult:
    """Train and score one (upstream, pr|asr, protocol); returns what `bench.run` turns into a record."""
    profile = req.profile if req.dataset is None else None
    task = load_ctc_task(req.task, req.dataset, profile=req.profile, root=req.data_root, skip_bad=req.skip_bad)
    dataset = dataset_record(spec, req, task.identity or task.dataset_dir, task.skipped)
    dataset["splits"] = {role: {k: v for k, v in st.items() if k != "oov_most_common"}
                         for role, st in task.stats.items()}
    settings = settings_for(req.task, profile, protocol)
    head_cfg = effective_head(settings.head, upstream.downsample_rate)
    lrs = tuple(req.lrs or settings.lrs)
    budget = _capped(settings.budget, req.budget)
    decoder, decoder_name = _decoder_for(task, req.task_options)
    n_layers, dim = upstream.num_layers, int(upstream.hidden_sizes[-1])
    default_norm = settings.normalize_layers if settings.normalize_layers is not None else n_layers > 1
    normalize_layers = bool(req.task_options.get("normalize_layers", default_norm))
    if protocol == "linear" and not -n_layers <= req.layer < n_layers:
        raise UserError(f"--layer {req.layer} is out of range: {upstream.name} has {n_layers} layers "
                        f"(0..{n_layers - 1}, or negative from the last)")
    layer = None if protocol in ("weighted", "finetune") else req.layer % n_layers
    autocast = (lambda: autocast_context(device, "bf16")) if req.precision == "bf16" else None

    # where features come from
    if protocol == "finetune":
        if not any(p.requires_grad for p in upstream.parameters()):
            raise UserError(f"{upstream.name} has no trainable parameters: use --protocol weighted or linear")
        sources = _wave_sources(task, upstream, "finetune")
    else:
        everything = [e for exs in task.splits.values() for e in exs]
        mode = req.task_options.get("feature_cache", "auto")
        too_big = mode == "auto" and _estimated_cache_bytes(upstream, everything) > MAX_CACHE_BYTES
        if mode == "off" or too_big:
            log(f"[run] frozen features computed online ({'too large to cache' if too_big else 'cache off'})")
            sources = _wave_sources(task, upstream, "online")
        else:
            sources = _cached_sources(req, task, upstream, dataset["manifest_sha256"], layer, log)
    per_second = (upstream.sample_rate / upstream.downsample_rate if sources.frozen_kind == "cache"
                  else upstream.sample_rate)
    max_padded = int(budget.batch_seconds * per_second)
    eval_padded = 4 * max_padded  # decoding keeps no activations for backward
    train_targets = task.targets("train")
    sources.details["labels_vs_frames"] = _labels_vs_frames(head_cfg, upstream, sources, train_targets, log)

    # linear protocol: standardise the chosen layer with train-set statistics
    stats = None
    if protocol == "linear":
        if sources.frozen_kind == "cache":
            mean, std, n_frames = _train_stats_cached(sources.by_role["train"], layer)
        else:
            mean, std, n_frames = _train_stats_online(upstream, sources.by_role["train"], layer, req.seed, max_padded)
        stats = (mean, std)
        sources.details["standardization"] = {"frames": int(n_frames), "layer": layer,
                                              "utterances": "all train" if sources.frozen_kind == "cache"
                                              else f"{_STATS_UTTERANCES} sampled train utterances"}

    def build(lr: float):
        torch.manual_seed(req.seed)
        featurizer = WeightedSum(n_layers, normalize_layers) if layer is None else Standardize(*stats)
        head = CTCHead(dim, len(task.vocab), head_cfg, upstream.downsample_rate)
        if sources.frozen_kind == "cache":
            model = FrozenCTC(featurizer, head).to(device)
            return model, [{"params": list(model.parameters()), "lr": lr}]
        trainable = sources.frozen_kind == "finetune"
        up = copy.deepcopy(upstream) if trainable else upstream
        model = UpstreamCTC(up, featurizer, head, layer, train_upstream=trainable, autocast=autocast).to(device)
        own = [p for n, p in model.named_parameters() if not n.startswith("upstream.")]
        groups = [{"params": own, "lr": lr}]
        if trainable:
            scale = req.finetune.get("upstream_lr_scale", 0.1)
            groups.append({"params": list(model.upstream.parameters()), "lr": lr * scale})
        return model, groups

    dev = sources.by_role["dev"]

    # Ties are broken by CER, then by the dev CTC loss: before CTC starts emitting labels every
    # hypothesis is empty (100 % errors) and only the loss shows progress; without it early stopping
    # would end every run on that plateau.
    rank_keys = settings.rank_keys or (("per", "ctc_loss") if task.name == "pr" else ("wer", "cer", "ctc_loss"))
    dev_targets = task.targets("dev")

    def dev_error(model) -> dict:
        hyps, loss = decode(model, dev, eval_padded, targets=dev_targets)
        rates = _error_rates(task, "dev", hyps)
        return {**{k: rates[k] for k in rank_keys if k != "ctc_loss"}, "ctc_loss": loss}

    def rank(metrics: dict) -> tuple:
        return tuple(metrics[k] for k in rank_keys)

    head_threads = int(req.task_options.get("threads", 1)) if device.type == "cpu" else None
    runs, best_state = {}, None
    for lr in lrs:
        model, groups = build(lr)
        with _torch_threads(head_threads):
            res = fit_ctc(model, sources.by_role["train"], train_targets, dev_error, rank, groups, budget, max_padded,
                          req.seed, progress=f"{req.task} {protocol} lr={lr:g}" if req.progress else None)
        if all(res.rank < r.rank for r in runs.values()):  # first (smallest) lr wins ties
            best_state = res.state
        runs[lr] = res
        res.state = None  # keep one state (the best so far), not one per learning rate
        log(f"[run] {req.task} {protocol} lr={lr:g}: dev {task.metric.upper()} {res.dev[task.metric]:.2f} "
            f"(step {res.best_step} of {res.steps_run}, {res.seconds:.0f} s)")
        del model
    chosen = min(lrs, key=lambda lr: runs[lr].rank)

    # only the chosen state meets the test sets
    model, _ = build(chosen)
    model.load_state_dict(best_state)
    with _torch_threads(head_threads):
        scored = {role: _error_rates(task, role, decode(model, sources.by_role[role], eval_padded, decoder)[0])
                  for role in task.splits if role != "train"}
        if decoder is not greedy_decode:
            scored["greedy"] = _error_rates(task, "test", decode(model, sources.by_role["test"], eval_padded)[0])
    details = {
        **sources.details,
        "features": sources.frozen_kind,
        "featurizer": (f"layer {layer}, standardized" if layer is not None else
                       "weighted sum of all layers (s3prl Featurizer, each layer layer-normed first)" if normalize_layers
                       else "weighted sum of all layers (s3prl Featurizer)"),
        "normalize_layers": normalize_layers if layer is None else None,
        "selection_order": list(rank_keys),
        "layer": "weighted" if layer is None else layer,
        "head": {**head_cfg.as_dict(), "labels": task.vocab.name, "num_labels": len(task.vocab),
                 "profile": profile or "full"},
        "budget": {**budget.as_dict(), "set_by_user": sorted(req.budget)},
        "optimizer": "Adam, gradient clipping 1.0",
        "head_threads": head_threads or torch.get_num_threads(),
        "decoder": decoder_name,
        **({"upstream_lr_scale": req.finetune.get("upstream_lr_scale", 0.1)} if protocol == "finetune" else {}),
        **({"layer_weights": model.featurizer.layer_weights()} if layer is None else {}),
    }
    return _summarise(task, runs, chosen, scored, rank_keys, budget, details, dataset)


def _summarise(task: CTCTask, runs: dict, chosen: float, scored: dict, rank_keys: tuple, budget: CTCBudget,
               details: dict, dataset: dict) -> PartialResult:
    """Scores of the chosen state + every grid point's dev numbers -> the record's fields."""
    metric, test = task.metric, scored["test"]
    secondary = {f"dev_{metric}": round(scored["dev"][metric], 3)}
    if task.name == "asr":
        secondary.update({"cer": round(test["cer"], 3), "dev_cer": round(scored["dev"]["cer"], 3)})
    if SECONDARY_TEST in scored:
        for k in ("per", "wer", "cer"):
            if k in scored[SECONDARY_TEST]:
                secondary[f"{k}_asterisk"] = round(scored[SECONDARY_TEST][k], 3)
    if "greedy" in scored:
        greedy = scored["greedy"]
        secondary.update({"wer_greedy": round(greedy["wer"], 3), "cer_greedy": round(greedy["cer"], 3)})
    secondary["errors"] = test[f"{metric}_detail"]
    grid = [{"lr": lr, **{f"dev_{k}": round(v, 3) for k, v in r.dev.items()}, "best_step": r.best_step,
             "steps_run": r.steps_run} for lr, r in runs.items()]
    selection = {
        "on": "validation",
        "criterion": f"lowest dev-clean {', then '.join(k.upper() for k in rank_keys)} (greedy decoding), "
                     f"evaluated every {budget.eval_every} steps; best step per learning rate, then best learning rate",
        "grid": grid,
        "chosen": {"lr": chosen, "step": runs[chosen].best_step},
        "test_used_for_selection": False,
    }
    details = {
        **details,
        "splits": task.split_names,
        "utterances": {role: len(exs) for role, exs in task.splits.items()},
        "runs": {f"{lr:g}": {"best_step": r.best_step, "steps_run": r.steps_run, "seconds": r.seconds,
                             "history": r.history} for lr, r in runs.items()},
        "examples": [{"ref": ref, "hyp": hyp} for ref, hyp in zip(task.references("test")[:3], test["_hyps"][:3])],
    }
    return PartialResult(round(test[metric], 3), chosen, "test-clean", secondary, selection, details, dataset)
