"""`bench pretrain METHOD`: find the method, resolve its config, pick the run directory, train.

A method is a `Method` (name, config dataclass, presets, recipe builder) found through `METHODS`,
which maps method names to `module:attribute`. Adding one (SCORE) is one line here plus a module that
defines its config (with a `train: TrainConfig` field), presets and `build(config, env, device, log)`
returning a `Recipe`; everything else (resume, DDP, logs, checkpoints) comes from `train`.

Config resolution: preset (`--config NAME`) or file (`--config FILE`, a mapping of overrides that
may name its base preset with `preset: NAME`), then `--set key=value` overrides. `--resume` takes
the config saved in the run's checkpoint; only runtime settings (`RESUMABLE_KEYS`) may change then,
because anything else would make the continuation differ from an uninterrupted run.

Every check a run can fail (config values, warm-up length, the output folder being writable, the
corpus index existing, init/teacher/base checkpoints and options, done by each method's `build` before
its feature cache) runs before the run folder is created, so a refused run leaves nothing behind.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from ..fileio import atomic_write_text, writable_problem
from ..runs import CHECKPOINT_NAME, run_checkpoints, runs_root
from .checkpoint import load_checkpoint
from .config import ConfigError, from_dict, merge, override, read_config_file, to_dict
from .ddp import DistEnv, setup, teardown
from .loop import Recipe, TrainResult, train
from .schedule import run_length

__all__ = ["Method", "METHODS", "MethodNotAvailable", "get_method", "resolve_config", "pretrain", "RESUMABLE_KEYS",
           "require_index"]

METHODS: dict[str, str] = {
    "m2d": "upstreams.m2d.pretrain:M2D_METHOD",
    "m2dx": "upstreams.m2d.pretrain:M2DX_METHOD",
    "score": "upstreams.score.pretrain:METHOD",  # SCORE fine-tuning (issue 7) plugs in here
}

# settings that do not change what is computed, so they may differ when a run is resumed
RESUMABLE_KEYS = {
    "train": {"stop_after", "checkpoint_every", "log_every", "progress", "tensorboard", "prefetch", "threads",
              "device", "micro_batch"},
    "data": {"cache_dir"},
}


class MethodNotAvailable(ConfigError):
    pass


@dataclass(frozen=True)
class Method:
    name: str
    config_type: type  # frozen dataclass with a `train: TrainConfig` field
    presets: dict[str, Any]
    build: Callable[..., Recipe]  # build(config, env, device, log) -> Recipe
    default_preset: str = "mini"
    # adjust(preset config, the user's overrides) -> overrides: drops preset settings that belong to a
    # preset value the user replaced (SCORE: the tiny preset's base_options are options of its base)
    adjust_overrides: Callable[[Any, dict], dict] | None = None


def require_index(index: str | Path, profile: str, what: str = "pretraining corpus") -> Path:
    """`index` must exist; else one line naming the data profile to build (checked before any cache or run folder)."""
    path = Path(index).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what} index not found: {path}; build it with `bench data build --profile {profile}` "
                          f"(data root: $BENCH_DATA or the user cache dir) or pass --index / data.index")
    return path


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown pretraining method '{name}'; choose one of {', '.join(METHODS)}")
    module_name, _, attr = METHODS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise MethodNotAvailable(f"pretraining method '{name}' is not available yet ({module_name} is not written)") from None
        raise
    method = getattr(module, attr, None)
    if not isinstance(method, Method):
        raise MethodNotAvailable(f"pretraining method '{name}' is not available yet ({module_name} has no {attr})")
    return method


def resolve_config(method: Method, config: str | None = None, overrides: dict | None = None) -> tuple[Any, str]:
    """(config, label): a preset name or a YAML/JSON file of overrides, then `overrides`."""
    spec = config or method.default_preset
    if spec in method.presets:
        base, label, updates = method.presets[spec], spec, {}
    elif Path(spec).suffix in (".yaml", ".yml", ".json") or Path(spec).is_file():
        updates = read_config_file(spec)
        preset = updates.pop("preset", method.default_preset)
        declared = updates.pop("method", method.name)
        if declared != method.name:
            raise ConfigError(f"{spec} is a '{declared}' config, not '{method.name}'")
        if preset not in method.presets:
            raise ConfigError(f"{spec}: unknown preset '{preset}'; choose one of {', '.join(method.presets)}")
        base, label = method.presets[preset], Path(spec).stem
    else:
        raise ConfigError(
            f"--config {spec}: neither a preset of {method.name} ({', '.join(method.presets)}) nor a YAML/JSON file"
        )
    updates = merge(updates, overrides or {})
    if method.adjust_overrides is not None:
        updates = method.adjust_overrides(base, updates)
    return override(base, updates), label


def _check_resumable(overrides: dict, where: str = "") -> None:
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else key
        if isinstance(value, dict) and key in RESUMABLE_KEYS:
            bad = sorted(set(value) - RESUMABLE_KEYS[key])
            if bad:
                raise ConfigError(
                    f"--resume continues the saved config exactly; {', '.join(f'{path}.{b}' for b in bad)} cannot change "
                    f"(runtime settings that can: {', '.join(f'{k}.{v}' for k in RESUMABLE_KEYS for v in sorted(RESUMABLE_KEYS[k]))})"
                )
        else:
            raise ConfigError(f"--resume continues the saved config exactly; '{path}' cannot change (start a new run with --init instead)")


def _run_dir(method: str, label: str, out: str | None, resume: bool, env: DistEnv) -> Path:
    if out:
        return Path(out).expanduser().resolve()
    if resume:
        found = run_checkpoints(method)
        if not found:
            raise ConfigError(f"--resume: no '{method}' run under {runs_root() / method}; pass --out DIR of the run")
        return found[0].parent
    name = f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    if env.enabled:  # every rank must use rank 0's name
        import torch.distributed as dist

        box = [name]
        dist.broadcast_object_list(box, src=0)
        name = box[0]
    return runs_root() / method / name


def pretrain(
    method_name: str,
    config: str | None = None,
    out: str | None = None,
    resume: bool = False,
    overrides: dict | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    method = get_method(method_name)
    overrides = overrides or {}
    if resume:
        if config is not None:
            raise ConfigError("--resume uses the config saved in the run's checkpoint; drop --config (use --set for runtime settings)")
        _check_resumable(overrides)
        cfg, label = None, "resume"
    else:
        cfg, label = resolve_config(method, config, overrides)

    # the device comes from the config, which on resume lives in the checkpoint: peek at it first
    probe_out = _run_dir(method.name, label, out, resume, DistEnv()) if resume else None
    if resume:
        saved = load_checkpoint(probe_out / CHECKPOINT_NAME)
        if saved.get("method") != method.name:
            raise ConfigError(f"{probe_out / CHECKPOINT_NAME} is a '{saved.get('method')}' run, not '{method.name}'")
        # a planned stop (train.stop_after) applies to the run that set it, not to its continuation
        cfg = override(from_dict(method.config_type, saved["config"]), merge({"train": {"stop_after": 0}}, overrides))
        del saved
    env, device = setup(cfg.train.device)
    try:
        out_dir = probe_out or _run_dir(method.name, label, out, resume, env)
        if not resume and (out_dir / CHECKPOINT_NAME).exists():
            raise ConfigError(f"{out_dir} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue it, "
                              f"or choose another --out")
        problem = writable_problem(out_dir)
        if problem:
            where = f"--out {out}" if out else f"run directory {out_dir} (under $BENCH_RUNS or ./runs)"
            raise ConfigError(f"{where}: {problem}; pass a writable --out DIR (or set $BENCH_RUNS)")
        recipe = method.build(cfg, env, device, log=log if env.is_main else (lambda _m: None))
        run_length(recipe.config.train, recipe.data.samples_per_epoch)  # the warm-up fits, before the run folder
        if env.is_main:
            log(f"{method.name}: run directory {out_dir} ({env.world_size} process(es), {device})")
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / "config.yaml", yaml.safe_dump({"method": method.name, **to_dict(recipe.config)},
                                                                      sort_keys=False))
        result = train(recipe, out_dir, env, device, resume=resume)
        if env.enabled:  # every rank reports (rank 0 alone writes checkpoints, logs and the plot)
            log(f"{method.name}: rank {env.rank}/{env.world_size} done: {result.micro_batches} micro-batches of "
                f"{result.micro_batch} clips, "
                f"{result.checkpoints_written} checkpoint write(s)")
        if env.is_main:
            log(f"{method.name}: step {result.step}/{result.total_steps}, checkpoint {result.checkpoint}"
                + (f", loss plot {result.plot}" if result.plot else ""))
        return result
    finally:
        teardown()

