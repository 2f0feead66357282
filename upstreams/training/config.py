"""Typed run configurations: frozen dataclasses, presets, and checked overrides from files or `--set`.

nanoGPT's lesson: a run is fully described by one small config that is saved in every checkpoint.
Here a config is a tree of frozen dataclasses. Overrides (a YAML/JSON file, `--set a.b=value`) are
applied by `override`, which rejects unknown keys (naming the known ones) and values of the wrong
type (naming the field and the expected type), so a typo fails at start-up, not after an hour.
A float field takes only finite numbers (`.nan`, `.inf` are refused) and also a number written as
text, such as `1e-4` (YAML 1.1, which PyYAML follows, reads exponents without a dot as strings).

`TrainConfig` holds the optimisation settings every pretraining method shares (M2D, M2D-X, SCORE).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import UpstreamError

__all__ = ["ConfigError", "TrainConfig", "override", "to_dict", "from_dict", "read_config_file", "parse_assignments"]


class ConfigError(UpstreamError, ValueError):
    """A configuration the user must fix: the message names the key and what is allowed."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and run settings shared by every pretraining method."""

    steps: int = 1000  # optimiser steps; 0 = derive from `epochs`
    epochs: float = 0.0  # passes over the corpus, used when steps == 0
    warmup_steps: int = 0  # linear warm-up; 0 = derive from `warmup_epochs`
    warmup_epochs: float = 0.0
    batch_size: int = 2048  # clips per optimiser step, summed over processes and accumulation
    micro_batch: int = 0  # clips per forward pass per process; 0 = batch_size / world size
    base_lr: float = 3e-4  # lr = base_lr * batch_size / 256 ...
    lr: float = 0.0  # ... unless this absolute lr is > 0
    min_lr: float = 0.0  # floor of the cosine decay
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float = 3.0  # max global gradient norm; 0 = no clipping
    precision: str = "fp32"  # fp32 | bf16 (autocast on CPU and CUDA)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads per process; 0 = leave torch's default
    seed: int = 0
    checkpoint_every: int = 200  # optimiser steps between atomic checkpoints
    log_every: int = 10  # optimiser steps between log lines
    probe_every: int = 0  # optimiser steps between learning probes (RankMe, trivial floors, kNN; also at step 0 and the end); 0 = off
    stop_after: int = 0  # stop after this many steps, once their checkpoint is written (a planned kill)
    prefetch: bool = True  # prepare the next micro-batch in a background thread
    tensorboard: bool = True  # also write a TensorBoard event file (no TensorFlow involved)
    progress: bool = True  # tqdm progress bar on the main process

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            for x in (v if isinstance(v, tuple) else (v,)):
                if isinstance(x, float) and not math.isfinite(x):
                    raise ConfigError(f"train.{f.name} must be a finite number, got {x}")
        if self.lr < 0 or self.base_lr < 0 or self.min_lr < 0:
            raise ConfigError(f"train.lr, train.base_lr and train.min_lr must be >= 0, got {self.lr}, {self.base_lr}, "
                              f"{self.min_lr}")
        if self.peak_lr <= 0:
            raise ConfigError("train.lr and train.base_lr are both 0: set train.lr (absolute) or train.base_lr "
                              "(scaled by batch_size / 256) to a number > 0")
        if self.weight_decay < 0 or self.clip_grad < 0:
            raise ConfigError(f"train.weight_decay and train.clip_grad must be >= 0, got {self.weight_decay}, "
                              f"{self.clip_grad}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must both be in [0, 1), got {list(self.betas)}")
        if self.threads < 0 or self.stop_after < 0:
            raise ConfigError(f"train.threads and train.stop_after must be >= 0, got {self.threads}, {self.stop_after}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"train.precision must be fp32 or bf16, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")
        if self.batch_size < 1 or self.micro_batch < 0:
            raise ConfigError(f"train.batch_size must be >= 1 and micro_batch >= 0, got {self.batch_size}, {self.micro_batch}")
        if self.steps < 0 or self.epochs < 0 or self.warmup_steps < 0 or self.warmup_epochs < 0:
            raise ConfigError("train.steps, epochs, warmup_steps and warmup_epochs must be >= 0")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ConfigError("train.checkpoint_every and train.log_every must be >= 1")
        if self.steps > 0 and self.warmup_steps >= self.steps:  # epoch-based lengths are checked on the corpus
            raise ConfigError(f"train.warmup_steps {self.warmup_steps} does not fit in a run of {self.steps} steps; "
                              f"set train.warmup_steps below train.steps")

    @property
    def peak_lr(self) -> float:
        """The learning rate after warm-up: MAE's linear scaling rule unless `lr` is set."""
        return self.lr if self.lr > 0 else self.base_lr * self.batch_size / 256


# -- conversion ------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp` and convert containers (lists -> tuples, dicts -> dataclasses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(tp)}")
    if is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return override(tp(), value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, str):  # `--set train.lr=1e-4`: YAML 1.1 leaves exponents without a dot as text
            try:
                value = float(value.strip())
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite number, got {value}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def override(config: Any, updates: dict, where: str = "") -> Any:
    """A copy of dataclass `config` with `updates` (nested dicts for nested configs) applied and checked."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(config))
    known = {f.name for f in fields(config)}
    changes = {}
    for key, value in updates.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in known:
            raise ConfigError(f"unknown config key '{path}'; known keys{' of ' + where if where else ''}: {', '.join(sorted(known))}")
        current = getattr(config, key)
        if is_dataclass(current) and isinstance(value, dict):
            changes[key] = override(current, value, path)
        else:
            changes[key] = _coerce(value, hints[key], path)
    try:
        return dataclasses.replace(config, **changes)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def to_dict(config: Any) -> dict:
    """Nested plain dict (tuples as lists): JSON/YAML-friendly and loadable with weights_only=True."""

    def plain(v: Any) -> Any:
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(config)


def from_dict(cls: type, d: dict, where: str = "") -> Any:
    return override(cls(), d, where)


# -- sources of overrides --------------------------------------------------------------------------
def read_config_file(path: str | Path) -> dict:
    """A YAML or JSON mapping (JSON is YAML, so one parser reads both)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    return data


def parse_assignments(items: list[str]) -> dict:
    """`["train.steps=100", "mask_ratio=0.6"]` -> `{"train": {"steps": 100}, "mask_ratio": 0.6}` (YAML scalars)."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (for example train.steps=100), got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item}: value is not valid YAML ({exc})") from exc
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: '{part}' was already given a value")
        node[parts[-1]] = value
    return out


def merge(base: dict, extra: dict) -> dict:
    """Deep-merge nested dicts (`extra` wins)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
