"""`bench pretrain m2d|m2dx`: run configs, presets, and the recipes the shared training loop runs.

Presets (any field can be overridden by a YAML/JSON file or `--set key=value`):

- `tiny`: seconds on CPU, for tests: tiny encoder, 30 steps of 8 clips.
- `mini`: the clip-task recipe the mini recipe study chose (results/recipe-study): the `mini` encoder
  (192-d, 6 layers) with 16x16 patches (160 ms frames), per-clip target standardisation, half of the
  clips non-speech with short clips packed, 1000 steps of 32 clips, bf16 autocast: about 8 minutes on
  one idle CPU core.
- `mini_speech`: the same with full-band 80x4 patches (40 ms frames, what PR/ASR/QbE need) and
  M2D-S time-span masking (spans of 5 patches). `quick`: `mini` cut to 500 steps (`bench quickstart`).
  `mini_16x4`: v0.1's mini recipe (16x4 patches, 1200 steps, token targets), for comparison.
- `base`: the paper's recipe for GPUs: ViT-B, input 80x608, patch 16x16, AdamW (0.9, 0.95), weight
  decay 0.05, base lr 3e-4 x batch/256, 20 warm-up epochs of 300, cosine, clip 3.0, batch 2048.
- m2dx `mini_respiratory`: the paper's respiratory (ICBHI) recipe in miniature: further pretraining
  of an M2D checkpoint (`--init`) on the respiratory corpus, distillation from the same M2D
  (standardised targets) and background noise at eta 0.3 (noise level matched to the main corpus
  first), NO labels. m2dx `mini_respiratory_supervised`: the same plus the ICBHI classes as a
  supervised offline task (CE); not the paper's recipe, so it is reported as its own row.
  m2dx `tiny` / `tiny_supervised`: the same two recipes with the tiny M2D settings, for tests.
  Without `--init` (and with `offline.teacher=init`), every m2dx preset starts from and distils the
  newest `bench pretrain m2d` run, as `bench pretrain score` does with its base.

Every check (init and teacher checkpoints and their front ends, the corpus and noise indexes) runs
before the log-mel cache is built, and `pretrain` builds the recipe before it creates the run folder.

Learning probes (`train.probe_every`, `probe.py`): `mini`, `mini_speech` and `quick` every 250 steps,
`mini_respiratory` every 100, `base` every 5000, `tiny` off.

EMA rates. The paper's 0.99995 -> 0.99999 suits ~300k steps: the target's time constant
1 / (1 - rate) is 20k steps at the start and 100k at the end, i.e. 7 % to 33 % of the run. A 30-step
test or a 1200-step CPU run with those rates would leave the target at its random init (0.99995^1200
still keeps 94 % of it), so the small presets scale the time constants to their length: mini
0.995 -> 0.9995 (200 -> 2000 steps over a 1000-step run: 0.995^1000 leaves 0.7 % of the
target's random draw; v0.1's 0.99 -> 0.998 over 400 steps left 9 %), tiny 0.9 -> 0.99 (10 -> 100 steps, so the target still moves visibly within a
30-step test).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import load_state_strict, read_checkpoint
from ..errors import CheckpointError
from ..frontend import LogMelConfig
from ..runs import latest_checkpoint, runs_root
from ..training.config import ConfigError, TrainConfig
from ..training.corpus import data_root, default_index
from ..training.ddp import DistEnv, barrier
from ..training.loop import Recipe
from ..training.run import Method, require_index
from .data import MelCrops, MelFeatures, load_features
from .encoder import ENCODER_PRESETS, EncoderConfig
from .m2dx import M2DX
from .m2dx_stats import LevelMatched, corpus_level, teacher_frame_stats
from .model import M2D, PREDICTOR_PRESETS, TARGET_NORMS, PredictorConfig, ema_rate
from .prebuilt import open_prebuilt
from .probe import M2DProbe

__all__ = ["DataConfig", "M2DConfig", "OfflineConfig", "NoiseConfig", "M2DXConfig", "M2D_PRESETS", "M2DX_PRESETS",
           "build_m2d", "build_m2dx", "InitWeights", "load_init", "initial_m2d_model", "M2D_METHOD", "M2DX_METHOD"]


@dataclass(frozen=True)
class DataConfig:
    profile: str = "mini"  # data profile whose pretraining corpus is used when `index` is empty
    corpus: str = "general"  # general | respiratory
    index: str = ""  # index.csv of the corpus; "" = <data root>/<profile>/pretrain/<corpus>/index.csv
    cache_dir: str = ""  # log-mel cache; "" = <data root>/_features
    # a prebuilt log-mel corpus (prebuilt.py, scripts/gpu_corpus.sh) used instead of index + cache,
    # for machines that receive no audio; "" = read the index
    features: str = ""
    # prebuilt labelled log-mel clips for the kNN probe instead of the built ESC-50 / Speech
    # Commands audio of `profile`; "" = read that audio
    probe_features: str = ""
    norm_stats: tuple[float, ...] = ()  # (mean, std); () = from the --init checkpoint, else from the corpus
    norm_stats_segments: int = 2000  # segments sampled to compute the statistics
    speech_share: float = 0.0  # fraction of speech clips per epoch (resampling by index source); 0 = as built
    pack_short: bool = False  # fill crops of short segments with other segments instead of padding

    def __post_init__(self) -> None:
        if not 0.0 <= self.speech_share < 1.0:
            raise ConfigError(f"data.speech_share must be in [0, 1) (0 = the corpus as built), got {self.speech_share}")
        if len(self.norm_stats) not in (0, 2) or (self.norm_stats and self.norm_stats[1] <= 0):
            raise ConfigError(f"data.norm_stats must be empty or [mean, std>0], got {list(self.norm_stats)}")


@dataclass(frozen=True)
class M2DConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    frontend: LogMelConfig = field(default_factory=LogMelConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    mask_ratio: float = 0.7  # 0.6 is the paper's other variant
    ema_start: float = 0.99995
    ema_end: float = 0.99999
    init: str = ""  # start from these weights: a checkpoint of this suite or an official nttcslab M2D one
    target_standardise: str = "token"  # token (the paper) | clip (data2vec-style per-clip standardisation first)
    mask_span: int = 0  # 0 = random patches (the paper); k > 0 = time spans of k patch columns (M2D-S style)

    def __post_init__(self) -> None:
        if self.target_standardise not in TARGET_NORMS:
            raise ConfigError(f"target_standardise must be one of {', '.join(TARGET_NORMS)}, got {self.target_standardise!r}")
        if self.mask_span < 0:
            raise ConfigError(f"mask_span must be >= 0 (0 = random patch masking), got {self.mask_span}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        for name in ("ema_start", "ema_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.frontend.n_mels != self.encoder.n_mels:
            raise ConfigError(f"frontend.n_mels {self.frontend.n_mels} != encoder.n_mels {self.encoder.n_mels}")


@dataclass(frozen=True)
class OfflineConfig:
    dim: int = 0  # offline embedding width; 0 = the teacher's frame width
    m2d_weight: float = 1.0
    distill_weight: float = 1.0  # 0 = no distillation
    teacher: str = "init"  # frozen M2D checkpoint to distil; "init" = the --init checkpoint
    supervised_weight: float = 0.0  # 0 = no supervised task (the paper's respiratory recipe has none)
    supervised_loss: str = "bce"  # bce (multi-label) | ce (single label)
    standardise_target: bool = True  # per-dimension standardised teacher frames, as the authors' code (m2dx_stats.py)
    target_stats_clips: int = 128  # clean crops whose teacher frames give those statistics, once per run

    def __post_init__(self) -> None:
        if self.supervised_loss not in ("bce", "ce"):
            raise ConfigError(f"offline.supervised_loss must be bce or ce, got {self.supervised_loss!r}")
        if self.target_stats_clips < 2:
            raise ConfigError(f"offline.target_stats_clips must be >= 2, got {self.target_stats_clips}")


@dataclass(frozen=True)
class NoiseConfig:
    eta: float = 0.0  # mixing ratio in the power domain; 0 = no noise
    index: str = ""  # noise corpus; "" = <data root>/<data.profile>/pretrain/noise/index.csv
    match_level: bool = True  # bring the noise corpus's mean log-mel to the main corpus's before mixing (m2dx_stats.py)
    levels: tuple[float, ...] = ()  # (main, noise) mean log-mel; () = measured once at the start, then stored here

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta < 1.0:
            raise ConfigError(f"noise.eta must be in [0, 1), got {self.eta}")
        if len(self.levels) not in (0, 2):
            raise ConfigError(f"noise.levels must be empty or [main, noise] mean log-mel, got {list(self.levels)}")


@dataclass(frozen=True)
class M2DXConfig(M2DConfig):
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)


# -- presets ---------------------------------------------------------------------------------------
_TINY_TRAIN = TrainConfig(steps=30, warmup_steps=5, batch_size=8, lr=1e-3, checkpoint_every=10, log_every=1,
                          progress=False)
# batch 32 x 1200 steps: ~1 h of bf16 on 2 shared CPU cores; base_lr is 10x the paper's because a
# 1200-step run at the linearly scaled 3.75e-5 barely leaves the initialisation
_MINI_TRAIN = TrainConfig(steps=1200, warmup_steps=120, batch_size=32, base_lr=3e-3, precision="bf16",
                          checkpoint_every=100, log_every=10, probe_every=100)
_BASE_TRAIN = TrainConfig(steps=0, epochs=300, warmup_epochs=20, batch_size=2048, base_lr=3e-4, weight_decay=0.05,
                          betas=(0.9, 0.95), clip_grad=3.0, precision="bf16", checkpoint_every=1000, log_every=50,
                          probe_every=5000)

# The mini recipes chosen by the recipe study (results/recipe-study, scripts/recipe_study.py), on
# validation scores against each run's step-0 twin. 16x4 patches at 1200 steps learned nothing beyond
# the initialisation (loss under the floors by a hair, kNN below step 0), at 2.3 s/step. 16x16 patches
# cost 0.49 s/step (5x more training per minute); per-clip target standardisation lifts the floor a
# content-blind predictor reaches from ~0.6 to ~1.9; with half of the clips non-speech and short clips
# packed instead of padded it gave the best validation scores (ESC-50 46.9 vs 41.7 for the twin).
# Speech tasks need frames of 40 ms or finer: `mini_speech` uses full-band 80x4 patches (40 ms) with
# M2D-S time-span masking. `quick` is `mini` cut to about 5 minutes for `bench quickstart`.
_MINI_CLIP_ENCODER = dataclasses.replace(ENCODER_PRESETS["mini"], patch_size=(16, 16))
_MINI_SPEECH_ENCODER = dataclasses.replace(ENCODER_PRESETS["mini"], patch_size=(80, 4))
_MINI_STUDY_TRAIN = dataclasses.replace(_MINI_TRAIN, steps=1000, warmup_steps=50, probe_every=250)
_MINI_MIX = DataConfig(pack_short=True, speech_share=0.5)  # half the clips non-speech, short clips packed

M2D_PRESETS: dict[str, M2DConfig] = {
    "tiny": M2DConfig(train=_TINY_TRAIN, data=DataConfig(profile="tiny", norm_stats_segments=200),
                      encoder=ENCODER_PRESETS["tiny"], predictor=PREDICTOR_PRESETS["tiny"], ema_start=0.9, ema_end=0.99),
    "mini": M2DConfig(train=_MINI_STUDY_TRAIN, data=_MINI_MIX, encoder=_MINI_CLIP_ENCODER,
                      predictor=PREDICTOR_PRESETS["mini"], ema_start=0.995, ema_end=0.9995, target_standardise="clip"),
    "mini_speech": M2DConfig(train=_MINI_STUDY_TRAIN, encoder=_MINI_SPEECH_ENCODER, predictor=PREDICTOR_PRESETS["mini"],
                             ema_start=0.995, ema_end=0.9995, target_standardise="clip", mask_span=5),
    "quick": M2DConfig(train=dataclasses.replace(_MINI_STUDY_TRAIN, steps=500, warmup_steps=25, probe_every=250),
                       data=_MINI_MIX, encoder=_MINI_CLIP_ENCODER, predictor=PREDICTOR_PRESETS["mini"], ema_start=0.995,
                       ema_end=0.9995, target_standardise="clip"),
    # v0.1's mini recipe (16x4 patches, 1200 steps), kept for comparison with earlier results
    "mini_16x4": M2DConfig(train=_MINI_TRAIN, encoder=ENCODER_PRESETS["mini"], predictor=PREDICTOR_PRESETS["mini"],
                           ema_start=0.99, ema_end=0.998),
    "base": M2DConfig(train=_BASE_TRAIN, data=DataConfig(norm_stats_segments=10000), encoder=ENCODER_PRESETS["base"],
                      predictor=PREDICTOR_PRESETS["base"]),
}

# M2D-X respiratory recipe (paper, ICBHI): further pretraining of an M2D (--init) with distillation from
# that same M2D and background noise at eta 0.3, NO labels; the `_supervised` presets add the ICBHI
# classes as a supervised offline task (not the paper's recipe: report them as their own row)
_M2DX_TINY = {f.name: getattr(M2D_PRESETS["tiny"], f.name) for f in dataclasses.fields(M2DConfig) if f.name != "data"}
_M2DX_MINI_RESP = dict(
    train=dataclasses.replace(_MINI_TRAIN, steps=600, warmup_steps=60, base_lr=1e-3),
    data=DataConfig(corpus="respiratory"), encoder=_MINI_CLIP_ENCODER, predictor=PREDICTOR_PRESETS["mini"],
    ema_start=0.995, ema_end=0.9995, target_standardise="clip", noise=NoiseConfig(eta=0.3))  # the mini m2d recipe
M2DX_PRESETS: dict[str, M2DXConfig] = {
    "tiny": M2DXConfig(**_M2DX_TINY, data=dataclasses.replace(M2D_PRESETS["tiny"].data, corpus="respiratory"),
                       offline=OfflineConfig(supervised_weight=0.0, target_stats_clips=16), noise=NoiseConfig(eta=0.3)),
    "tiny_supervised": M2DXConfig(**_M2DX_TINY, data=dataclasses.replace(M2D_PRESETS["tiny"].data, corpus="respiratory"),
                                  offline=OfflineConfig(supervised_weight=1.0, target_stats_clips=16),
                                  noise=NoiseConfig(eta=0.3)),
    "mini": M2DXConfig(**{f.name: getattr(M2D_PRESETS["mini"], f.name) for f in dataclasses.fields(M2DConfig)}),
    "mini_respiratory": M2DXConfig(**_M2DX_MINI_RESP, offline=OfflineConfig(distill_weight=1.0, supervised_weight=0.0)),
    "mini_respiratory_supervised": M2DXConfig(
        **_M2DX_MINI_RESP, offline=OfflineConfig(distill_weight=1.0, supervised_weight=1.0, supervised_loss="ce")),
    "base": M2DXConfig(**{f.name: getattr(M2D_PRESETS["base"], f.name) for f in dataclasses.fields(M2DConfig)}),
}


# -- initial weights -------------------------------------------------------------------------------
@dataclass
class InitWeights:
    """What a starting checkpoint provides; `target`/`predictor` are None when it holds only an encoder."""

    path: str
    encoder_config: EncoderConfig
    frontend_config: LogMelConfig
    norm_stats: tuple[float, float]
    encoder: dict
    target: dict | None = None  # target_blocks.* / target_norm.* keys
    predictor: dict | None = None  # Predictor state
    predictor_config: PredictorConfig | None = None


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_init(path: str | Path) -> InitWeights:
    """Read an M2D bundle/checkpoint of this suite or an official nttcslab checkpoint."""
    bundle = read_checkpoint(path)
    if "encoder" not in bundle:
        from .convert import convert_official

        bundle = convert_official(bundle, source=path)
    try:
        enc = EncoderConfig.from_dict(bundle["encoder_config"])
        fe = LogMelConfig(**bundle.get("frontend_config", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not an M2D weight bundle ({exc})") from exc
    init = InitWeights(str(path), enc, fe, tuple(bundle.get("norm_stats", (-7.1, 4.2))), bundle["encoder"])
    model_state = bundle.get("model") if isinstance(bundle.get("model"), dict) else None
    pred_cfg = bundle.get("predictor_config") or (bundle.get("config") or {}).get("predictor")
    if model_state is not None and any(k.startswith("target_blocks.") for k in model_state):
        init.target = {**{f"blocks.{k}": v for k, v in _sub(model_state, "target_blocks.").items()},
                       **{f"norm.{k}": v for k, v in _sub(model_state, "target_norm.").items()}}
        init.predictor = _sub(model_state, "predictor.") or None
    for key in ("m2d_target", "m2d_predictor"):  # what convert_official extracts from official checkpoints
        if key in bundle:
            setattr(init, key[4:], bundle[key])
    if pred_cfg and init.predictor:
        init.predictor_config = PredictorConfig(**pred_cfg)
    return init


def _apply_init(model: M2D, init: InitWeights, log) -> None:
    load_state_strict(model.encoder, init.encoder, init.path)
    if init.target is not None:
        twin = nn.ModuleDict({"blocks": model.target_blocks, "norm": model.target_norm})
        load_state_strict(twin, init.target, f"{init.path} (target encoder)")
    else:
        model.copy_online_to_target()
        log(f"{init.path} has no target encoder: the target starts as a copy of the encoder")
    if init.predictor is not None:
        load_state_strict(model.predictor, init.predictor, f"{init.path} (predictor)")
    else:
        log(f"{init.path} has no predictor weights: the predictor starts from random weights")


def initial_m2d_model(cfg: M2DConfig, init: InitWeights | None = None, log=print, *, teacher=None,
                      teacher_input: tuple[float, float] = (1.0, 0.0), num_classes: int = 0) -> M2D:
    """The step-0 model of an m2d (`M2DConfig`) or m2dx (`M2DXConfig`) run: the ONE place that makes it.

    `build_m2d`/`build_m2dx` train what this returns, and `random -o like=CKPT` (`twin.py`) rebuilds
    the run's step 0 with it, so the two cannot drift apart. `cfg` is the resolved run config (the
    one a checkpoint stores): seed `cfg.train.seed`, then the model, then - when the run starts
    from `init` - the init checkpoint's encoder (and target/predictor when it has them). Everything
    drawn from the global RNG here is part of step 0; frozen parts that come from files (the m2dx
    teacher) are loaded by the caller before this seeds, so they do not shift the draw.
    """
    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
    if isinstance(cfg, M2DXConfig):
        off = cfg.offline
        model = M2DX(cfg.encoder, cfg.predictor, off.dim, teacher, teacher_input, num_classes,
                     (off.m2d_weight, off.distill_weight, off.supervised_weight), off.supervised_loss)
    else:
        model = M2D(cfg.encoder, cfg.predictor)
    model.target_standardise = cfg.target_standardise
    if init is not None:
        _apply_init(model, init, log)
    return model


# -- recipes ---------------------------------------------------------------------------------------
def _features(index: Path, cfg: M2DConfig, env: DistEnv, log) -> MelFeatures:
    """Rank 0 builds the cache if needed while the others wait, then everyone memory-maps it."""
    cache = Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else data_root() / "_features"
    feats = load_features(index, cfg.frontend, cache, log) if env.is_main else None
    barrier(env)
    return feats if feats is not None else load_features(index, cfg.frontend, cache, log)


def _resolve_init(cfg: M2DConfig, log) -> tuple[M2DConfig, InitWeights | None]:
    init = load_init(cfg.init) if cfg.init else None
    if init is not None:
        changed = [n for n, a, b in (("encoder", cfg.encoder, init.encoder_config), ("frontend", cfg.frontend, init.frontend_config),
                                     ("predictor", cfg.predictor, init.predictor_config or cfg.predictor)) if a != b]
        if changed:
            log(f"using the {', '.join(changed)} config of {cfg.init} (the weights fix the architecture)")
        cfg = dataclasses.replace(cfg, encoder=init.encoder_config, frontend=init.frontend_config,
                                  predictor=init.predictor_config or cfg.predictor)
    return cfg, init


def _index(cfg: M2DConfig) -> Path | None:
    """The corpus index (checked to exist), or None when `data.features` replaces it."""
    if cfg.data.features:
        return None
    index = Path(cfg.data.index).expanduser() if cfg.data.index else default_index(cfg.data.corpus, cfg.data.profile)
    return require_index(index, cfg.data.profile, f"{cfg.data.corpus} pretraining corpus")


def _resolve_data(cfg: M2DConfig, init: InitWeights | None, env: DistEnv, log) -> tuple[M2DConfig, MelFeatures]:
    if cfg.data.features:
        feats = open_prebuilt(cfg.data.features, cfg.frontend)
        log(f"prebuilt log-mel corpus {feats.directory}: {len(feats)} segments (no index, no cache)")
    else:
        feats = _features(_index(cfg), cfg, env, log)
    stats = cfg.data.norm_stats or (init.norm_stats if init else feats.norm_stats(cfg.data.norm_stats_segments, cfg.train.seed))
    index = cfg.data.index if cfg.data.features else str(feats.index)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, index=index,
                                                             norm_stats=tuple(float(s) for s in stats)))
    return cfg, feats


def _resolve_common(cfg: M2DConfig, env: DistEnv, log) -> tuple[M2DConfig, InitWeights | None, MelFeatures]:
    cfg, init = _resolve_init(cfg, log)
    _index(cfg)  # a missing corpus fails before anything else is read
    cfg, feats = _resolve_data(cfg, init, env, log)
    return cfg, init, feats


def _default_init(cfg: M2DXConfig, log) -> M2DXConfig:
    """m2dx further pretrains and distils an M2D: without --init (teacher = init) that is the newest m2d run."""
    off = cfg.offline
    if cfg.init or off.teacher != "init" or off.distill_weight <= 0:
        return cfg
    try:
        path = latest_checkpoint("m2d")
    except CheckpointError:
        raise ConfigError(f"m2dx starts from and distils an M2D run (offline.teacher=init), and there is none under "
                          f"{runs_root() / 'm2d'}: run `bench pretrain m2d` first, or pass --init CKPT "
                          f"(offline.distill_weight=0 trains without a teacher)") from None
    log(f"m2dx: no --init given: starting from and distilling the newest m2d run, {path}")
    return dataclasses.replace(cfg, init=str(path))


def _export(cfg: M2DConfig, extra: dict | None = None):
    def export(model: M2D) -> dict:
        return {
            "encoder_config": cfg.encoder.to_dict(),
            "frontend_config": cfg.frontend.to_dict(),
            "norm_stats": list(cfg.data.norm_stats),
            "encoder": model.encoder.state_dict(),
            "predictor_config": cfg.predictor.to_dict(),
            **(extra or {}),
        }

    return export


def _ema_step(cfg: M2DConfig):
    def after_step(model: M2D, step: int, total_steps: int) -> dict[str, float]:
        decay = ema_rate(step, total_steps, cfg.ema_start, cfg.ema_end)
        model.update_target(decay)
        return {"ema_decay": decay}

    return after_step


def _probe(cfg: M2DConfig, model: M2D, data: MelCrops, env: DistEnv, log) -> M2DProbe | None:
    """The learning probe of `train.probe_every` (`probe.py`): rank 0 only, built from the step-0 model."""
    return M2DProbe(cfg, model, data, log) if cfg.train.probe_every > 0 and env.is_main else None


def _crop_options(cfg: M2DConfig) -> dict:
    """MelCrops settings beyond the paper's: masking geometry, short-clip packing, corpus mix."""
    return {"grid": cfg.encoder.grid, "mask_span": cfg.mask_span, "pack_short": cfg.data.pack_short,
            "speech_share": cfg.data.speech_share}


def build_m2d(cfg: M2DConfig, env: DistEnv, device: torch.device, log=print) -> Recipe:
    cfg, init, feats = _resolve_common(cfg, env, log)
    model = initial_m2d_model(cfg, init, log)
    gf, gt = cfg.encoder.grid
    data = MelCrops(feats, cfg.encoder.input_frames, cfg.data.norm_stats, gf * gt, cfg.mask_ratio, cfg.train.seed,
                    **_crop_options(cfg))
    return Recipe("m2d", cfg, model, data, _export(cfg), _ema_step(cfg), probe=_probe(cfg, model, data, env, log))


def _match_noise_level(cfg: M2DXConfig, feats: MelFeatures, noise: MelFeatures, log):
    """Noise read at the main corpus's mean log-mel (`m2dx_stats`); the two levels are stored in the config."""
    if not cfg.noise.match_level:
        return cfg, noise
    levels = cfg.noise.levels or tuple(corpus_level(f, cfg.data.norm_stats_segments, cfg.train.seed) for f in (feats, noise))
    shift = levels[0] - levels[1]
    log(f"m2dx: noise mean log-mel {levels[1]:.3f} -> main corpus {levels[0]:.3f} (noise power x {math.exp(shift):.4g}, "
        f"{10 * shift / math.log(10):+.1f} dB) before the eta {cfg.noise.eta} mix")
    cfg = dataclasses.replace(cfg, noise=dataclasses.replace(cfg.noise, levels=tuple(float(x) for x in levels)))
    return cfg, LevelMatched(noise, shift)


def build_m2dx(cfg: M2DXConfig, env: DistEnv, device: torch.device, log=print) -> Recipe:
    # every check before the (possibly long) feature cache build: init, teacher, corpus and noise indexes
    cfg = _default_init(cfg, log)
    off = cfg.offline
    path = cfg.init if off.teacher == "init" else off.teacher
    if off.distill_weight > 0 and not path:
        raise ConfigError("offline.teacher=init needs --init CKPT; or set offline.teacher=PATH, or offline.distill_weight=0")
    cfg, init = _resolve_init(cfg, log)
    up = None
    if off.distill_weight > 0:
        from .upstream import load_bundle

        up = load_bundle(path)
        if up.frontend.config != cfg.frontend:
            raise ConfigError(f"teacher {path} uses front end {up.frontend.config}, the run {cfg.frontend}")
    _index(cfg)
    if cfg.noise.eta > 0:
        noise_index = Path(cfg.noise.index).expanduser() if cfg.noise.index else default_index("noise", cfg.data.profile)
        require_index(noise_index, cfg.data.profile, "noise corpus")
    cfg, feats = _resolve_data(cfg, init, env, log)
    teacher, teacher_input = None, (1.0, 0.0)
    if up is not None:
        t_mean, t_std = (float(x) for x in up.frontend.norm_stats)
        mean, std = cfg.data.norm_stats
        teacher, teacher_input = up.encoder, (std / t_std, (mean - t_mean) / t_std)
    labels = None
    if off.supervised_weight > 0:
        labels = feats.label_names()
        if not labels:
            raise ConfigError(f"offline.supervised_weight > 0 but {feats.index} has no labels; set offline.supervised_weight=0")
    noise = None
    if cfg.noise.eta > 0:
        noise_index = Path(cfg.noise.index).expanduser() if cfg.noise.index else default_index("noise", cfg.data.profile)
        noise = _features(noise_index, cfg, env, log)
        cfg = dataclasses.replace(cfg, noise=dataclasses.replace(cfg.noise, index=str(noise.index)))
        cfg, noise = _match_noise_level(cfg, feats, noise, log)

    model = initial_m2d_model(cfg, init, log, teacher=teacher, teacher_input=teacher_input, num_classes=len(labels or []))
    gf, gt = cfg.encoder.grid
    data = MelCrops(feats, cfg.encoder.input_frames, cfg.data.norm_stats, gf * gt, cfg.mask_ratio, cfg.train.seed,
                    noise=noise, eta=cfg.noise.eta, label_names=labels, **_crop_options(cfg))
    if teacher is not None and off.standardise_target:
        mean, std = teacher_frame_stats(model.teacher_frames, data, off.target_stats_clips, cfg.train.micro_batch or 32)
        model.set_distill_stats(mean, std)
        log(f"m2dx: distillation targets standardised per dimension (teacher frames of {off.target_stats_clips} clean "
            f"crops: mean |mean| {mean.abs().mean():.3f}, mean std {std.mean():.3f}; saved as distill_mean/distill_std)")
    extra = {"label_names": labels} if labels else {}
    return Recipe("m2dx", cfg, model, data, _export(cfg, extra), _ema_step(cfg), probe=_probe(cfg, model, data, env, log))


M2D_METHOD = Method("m2d", M2DConfig, M2D_PRESETS, build_m2d)
M2DX_METHOD = Method("m2dx", M2DXConfig, M2DX_PRESETS, build_m2dx)
