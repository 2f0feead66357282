"""`bench pretrain score`: SCORE fine-tuning of a base upstream with the shared training loop.

Presets (override with a YAML/JSON file or `--set`; `--base NAME --base-ckpt PATH` pick the base):

- `tiny`: seconds, for tests: a seeded tiny random M2D as the base, 12 steps of 4 utterances.
  Its `base_options` (`arch=tiny`) are options of that base: `--base NAME` drops them (`--set
  base_options=[...]` gives the new base its own).
- `mini`: the `m2d` upstream's latest run as the base (`--base`/`--base-ckpt` pick another; SCORE
  needs a base that already encodes content, e.g. the speech M2D preset), 200 steps of 8 utterances
  (<= 6 s crops) on the mini LibriSpeech-layout training speech, 56 warm-up steps, AdamW lr 2e-4,
  clipping at 1, bf16 autocast, the collapse check (`collapse.py`) every 20 steps.
- `base`: the paper's recipe: 3600 steps, batch 1 x 8 accumulation, AdamW 2e-5, 1000 warm-up
  steps, clipping at 1, LibriSpeech train-clean-100 (Meghanani & Hain, ICASSP 2024).

How `mini` is scaled from `base`. Steps: one step of 8 utterances (6-s crops) on the `mini` M2D
architecture (192-d x 6 layers, patch 16x4), top 2 layers tuned, one thread, bf16, measured
2.9-4.9 s (median ~4 s with the 2 cores shared by other jobs, load average 5-11), so 200 steps are
10-15 minutes; a 20-step run of exactly this preset (random `mini`-architecture base, tiny corpus)
at load average 9.5: 4.1 and 4.6 s/step per 10-step window, 1.4-3.4 s per collapse check (11 in a
run). Warm-up keeps the official ratio 1000 / 3600 = 0.28 (56 / 200). Batch 8 in one pass gives
the official 1 x 8 accumulation's gradient (the loss is a per-utterance mean). Learning
rate: Adam moves each weight by about lr per step, so the official run's total movement is about
2e-5 x (3600 - 1000 / 2) = 0.062; 2e-4 x (200 - 56 / 2) = 0.034 keeps it within a factor of 2,
where the official 2e-5 would give 0.0034. Measured on a random `mini`-architecture base (80
steps of 4 utterances, 4-s crops, frozen projection): lr 2e-4 moved the tuned blocks by 2.2 %
(||W - W0|| / ||W0||) against 0.9 % at 5e-5, with the same between-utterance cosine (0.89 from
0.85) and no larger gradient norm (0.06-0.14, under the clip of 1).

Projection: frozen, see `model.py` for the evidence.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoints import file_sha256
from ..training.config import ConfigError, TrainConfig
from ..training.corpus import default_index
from ..training.ddp import DistEnv
from ..training.loop import Recipe
from ..training.run import Method, require_index
from .data import PerturbedPairs
from .collapse import CollapseProbe
from .model import PROJECTIONS, ScoreModel

__all__ = ["ScoreDataConfig", "ScoreConfig", "SCORE_PRESETS", "build_score", "METHOD", "parse_options"]


@dataclass(frozen=True)
class ScoreDataConfig:
    profile: str = "mini"
    index: str = ""  # "" = <data root>/<profile>/pretrain/general/index.csv
    source_prefix: str = "librispeech"  # only rows whose provenance starts with this (speech); "" = all
    max_seconds: float = 6.0  # random crop of longer utterances; 0 = no crop
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)
    semitones: float = 2.0


@dataclass(frozen=True)
class ScoreConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    data: ScoreDataConfig = field(default_factory=ScoreDataConfig)
    base: str = "m2d"  # any registered upstream that exposes its layers
    base_ckpt: str = ""  # "" = the base's own default (m2d: its latest run)
    base_options: tuple[str, ...] = ()  # upstream options as "key=value", e.g. ["arch=tiny"]
    top_layers: int = 2
    proj_dim: int = 256
    gamma: float = 0.1
    projection: str = "frozen"  # trained (the paper's shared head) | frozen (random, fixed) | none; see model.py
    probe_utterances: int = 8  # utterances of the collapse check (collapse.py), every train.probe_every steps

    def __post_init__(self) -> None:
        if self.projection not in PROJECTIONS:
            raise ConfigError(f"projection must be one of {', '.join(PROJECTIONS)}, got {self.projection!r}")
        if self.probe_utterances < 2:
            raise ConfigError(f"probe_utterances must be >= 2, got {self.probe_utterances}")
        if self.top_layers < 1:
            raise ConfigError(f"top_layers must be >= 1, got {self.top_layers}")
        if self.gamma <= 0:
            raise ConfigError(f"gamma must be > 0, got {self.gamma}")
        parse_options(self.base_options)


def parse_options(items) -> dict:
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise ConfigError(f"base_options entries must look like key=value, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


_SCORE_TRAIN = dict(betas=(0.9, 0.999), weight_decay=0.01, clip_grad=1.0)
SCORE_PRESETS: dict[str, ScoreConfig] = {
    "tiny": ScoreConfig(
        train=TrainConfig(steps=12, warmup_steps=2, batch_size=4, lr=1e-3, checkpoint_every=4, log_every=1,
                          progress=False, **_SCORE_TRAIN),
        data=ScoreDataConfig(profile="tiny", max_seconds=3.0), base="random", base_options=("arch=tiny",)),
    "mini": ScoreConfig(
        train=TrainConfig(steps=200, warmup_steps=56, batch_size=8, lr=2e-4, precision="bf16", checkpoint_every=50,
                          log_every=10, probe_every=20, **_SCORE_TRAIN),
        data=ScoreDataConfig(profile="mini", max_seconds=6.0)),
    "base": ScoreConfig(
        train=TrainConfig(steps=3600, warmup_steps=1000, batch_size=8, micro_batch=1, lr=2e-5, checkpoint_every=200,
                          log_every=20, probe_every=200, **_SCORE_TRAIN),
        data=ScoreDataConfig(max_seconds=0.0)),
}


def _load_base(cfg: ScoreConfig):
    import upstreams

    base = upstreams.load(cfg.base, ckpt=cfg.base_ckpt or None, **parse_options(cfg.base_options))
    path = getattr(base, "checkpoint_path", None)
    return base, path, (getattr(base, "checkpoint_sha256", None) or file_sha256(path))


def _adjust_overrides(preset: ScoreConfig, updates: dict) -> dict:
    """A preset's `base_options`/`base_ckpt` belong to its base: a user who names another base starts without
    them (`bench pretrain score --config tiny --base m2d` must not hand m2d the tiny random base's arch)."""
    base = updates.get("base")
    if base is None or base == preset.base:
        return updates
    return {"base_options": [], "base_ckpt": "", **updates}


def build_score(cfg: ScoreConfig, env: DistEnv, device: torch.device, log=print) -> Recipe:
    index = Path(cfg.data.index).expanduser() if cfg.data.index else default_index("general", cfg.data.profile)
    require_index(index, cfg.data.profile, "SCORE speech corpus")  # before the base is loaded
    base, base_path, base_sha = _load_base(cfg)
    # pin the base so a resumed or re-read run never silently switches to a newer checkpoint
    cfg = dataclasses.replace(cfg, base_ckpt=str(base_path or ""))
    data = PerturbedPairs(str(index), cfg.data.source_prefix, int(base.sample_rate),
                          cfg.data.max_seconds or 1e9, cfg.train.seed, cfg.data.speeds, cfg.data.semitones)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, index=str(index)))
    log(f"score: base {cfg.base} ({base_path or 'no checkpoint'}), {len(data.segments)} utterances from {index}")
    torch.manual_seed(cfg.train.seed)
    model = ScoreModel(base, cfg.top_layers, cfg.proj_dim, cfg.gamma, cfg.projection)
    probe = None
    if cfg.train.probe_every > 0 and env.is_main:  # built from the step-0 model: W0 of the weight changes
        probe = CollapseProbe(model, data, cfg.probe_utterances, cfg.data.max_seconds, cfg.train.seed)
    provenance = {"base": cfg.base, "base_options": list(cfg.base_options), "base_checkpoint": base_path,
                  "base_checkpoint_sha256": base_sha, "top_layers": cfg.top_layers,
                  "projection": cfg.projection}

    def export(m: ScoreModel) -> dict:
        student = m.student
        if hasattr(student, "bundle"):  # M2D architecture: a plain weight bundle, loadable by m2d too
            return {**student.bundle(), "score": provenance}
        return {"score": provenance, "upstream_state": {k: v.detach().cpu() for k, v in student.state_dict().items()}}

    return Recipe("score", cfg, model, data, export, probe=probe)


METHOD = Method("score", ScoreConfig, SCORE_PRESETS, build_score, adjust_overrides=_adjust_overrides)
