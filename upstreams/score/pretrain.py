"""`bench pretrain score`: SCORE fine-tuning of a base upstream with the shared training loop.

Presets (override with a YAML/JSON file or `--set`; `--base NAME --base-ckpt PATH` pick the base):

- `tiny`: seconds, for tests: a seeded tiny random M2D as the base, 12 steps of 4 utterances.
  Its `base_options` (`arch=tiny`) are options of that base: `--base NAME` drops them (`--set
  base_options=[...]` gives the new base its own).
- `mini`: the `m2d` upstream's latest run as the base, 300 steps of 8 utterances (<= 6 s crops) on
  the mini LibriSpeech-layout training speech, AdamW lr 5e-5 (the paper's 2e-5 moves a 300-step
  run too little), 30 warm-up steps, clipping at 1, bf16 autocast.
- `base`: the paper's recipe: 3600 steps, batch 1 x 8 accumulation, AdamW 2e-5, 1000 warm-up
  steps, clipping at 1, LibriSpeech train-clean-100 (Meghanani & Hain, ICASSP 2024).
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
from .model import ScoreModel

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

    def __post_init__(self) -> None:
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
        train=TrainConfig(steps=300, warmup_steps=30, batch_size=8, lr=5e-5, precision="bf16", checkpoint_every=50,
                          log_every=10, **_SCORE_TRAIN),
        data=ScoreDataConfig(profile="mini", max_seconds=6.0)),
    "base": ScoreConfig(
        train=TrainConfig(steps=3600, warmup_steps=1000, batch_size=8, micro_batch=1, lr=2e-5, checkpoint_every=200,
                          log_every=20, **_SCORE_TRAIN),
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
    model = ScoreModel(base, cfg.top_layers, cfg.proj_dim, cfg.gamma)
    provenance = {"base": cfg.base, "base_options": list(cfg.base_options), "base_checkpoint": base_path,
                  "base_checkpoint_sha256": base_sha, "top_layers": cfg.top_layers}

    def export(m: ScoreModel) -> dict:
        student = m.student
        if hasattr(student, "bundle"):  # M2D architecture: a plain weight bundle, loadable by m2d too
            return {**student.bundle(), "score": provenance}
        return {"score": provenance, "upstream_state": {k: v.detach().cpu() for k, v in student.state_dict().items()}}

    return Recipe("score", cfg, model, data, export)


METHOD = Method("score", ScoreConfig, SCORE_PRESETS, build_score, adjust_overrides=_adjust_overrides)
