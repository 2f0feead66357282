"""Upstream registry: a decorator for built-ins, entry points for third parties, `module:factory` ad hoc.

Registering a custom upstream is the most common s3prl complaint (hubconf files found by scanning
`globals()`). Here a factory is any callable `factory(ckpt=None, **options) -> Upstream`, and it
can be reached three ways:

- built in:      `@register_upstream("name", description=...)` in this package;
- installed:     an entry point in the group `bench.upstreams` (`name = "pkg.module:factory"`);
- ad hoc:        `upstreams.load("pkg.module:factory")` / `bench run --upstream pkg.module:factory`.
- HEAR / s3prl:  `hear:PKG.MODULE` (any HEAR 2021 module) and `s3prl:NAME` (any s3prl 0.4.18 upstream)
                 resolve first (upstreams/hear_upstream.py, upstreams/s3prl_upstream.py).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

from torch import nn

from .errors import CheckpointError, OptionError, UnknownUpstreamError

__all__ = ["UpstreamInfo", "register_upstream", "names", "info", "load"]

ENTRY_POINT_GROUP = "bench.upstreams"


@dataclass(frozen=True)
class UpstreamInfo:
    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    paper: str = ""
    needs_checkpoint: bool = False  # True: weights come from --ckpt or the latest pretraining run
    source: str = "builtin"  # builtin | entry-point:<dist> | ad-hoc
    options: dict = field(default_factory=dict)  # option -> default, read from the factory signature


_REGISTRY: dict[str, UpstreamInfo] = {}


def _options_of(factory: Callable) -> dict:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in sig.parameters.values()
        if p.name != "ckpt" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def register_upstream(
    name: str, *, description: str = "", paper: str = "", needs_checkpoint: bool = False
) -> Callable[[Callable], Callable]:
    def deco(factory: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"upstream '{name}' is registered twice")
        _REGISTRY[name] = UpstreamInfo(
            name, factory, description or (inspect.getdoc(factory) or "").split("\n")[0], paper,
            needs_checkpoint, "builtin", _options_of(factory),
        )
        return factory

    return deco


def _builtins() -> None:
    from . import catalog  # noqa: F401  (its imports register the built-in upstreams)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Registered upstream names: built-ins first (registration order), then installed entry points."""
    _builtins()
    return list(_REGISTRY) + sorted(n for n in _entry_points() if n not in _REGISTRY)


def _resolve_ad_hoc(spec: str) -> UpstreamInfo:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownUpstreamError(f"cannot import '{module_name}' for upstream '{spec}': {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UnknownUpstreamError(f"'{module_name}' has no callable '{attr}' (upstream '{spec}')")
    return UpstreamInfo(spec, factory, inspect.getdoc(factory) or "", source="ad-hoc", options=_options_of(factory))


def _third_party(name: str) -> UpstreamInfo:
    """`hear:PKG.MODULE` (any HEAR 2021 module) and `s3prl:NAME` (any s3prl upstream, local weights only)."""
    source, _, rest = name.partition(":")
    if source == "hear":
        from .hear_upstream import factory_for

        needs_ckpt = False
    else:
        from .s3prl_upstream import CONFIG_ONLY, WEIGHT_FREE, factory_for

        needs_ckpt = rest not in WEIGHT_FREE + CONFIG_ONLY
    factory = factory_for(name)
    return UpstreamInfo(name, factory, inspect.getdoc(factory) or "", needs_checkpoint=needs_ckpt, source=source,
                        options=_options_of(factory))


def info(name: str) -> UpstreamInfo:
    if name.startswith(("hear:", "s3prl:")):  # reserved prefixes: before the registry and `module:factory`
        return _third_party(name)
    _builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    eps = _entry_points()
    if name in eps:
        factory = eps[name].load()
        dist = getattr(eps[name], "dist", None)
        return UpstreamInfo(
            name, factory, inspect.getdoc(factory) or "", source=f"entry-point:{dist.name if dist else '?'}",
            options=_options_of(factory),
        )
    if ":" in name:
        return _resolve_ad_hoc(name)
    raise UnknownUpstreamError(
        f"unknown upstream '{name}'; known upstreams: {', '.join(names())} "
        f"(or pass 'package.module:factory')"
    )


def load(name: str, ckpt: str | Path | None = None, **options) -> nn.Module:
    """Build upstream `name`; `ckpt` overrides where its weights come from; options go to its factory."""
    entry = info(name)
    accepted = set(_options_of(entry.factory))
    takes_kwargs = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(entry.factory).parameters.values()
    )
    options = {k: v for k, v in options.items() if v is not None}
    bad = sorted(set(options) - accepted)
    if bad and not takes_kwargs:
        raise OptionError(
            f"upstream '{name}' does not take option(s) {', '.join(bad)}; "
            f"it accepts: {', '.join(sorted(accepted)) or 'no options'}"
        )
    if ckpt is not None and not Path(ckpt).exists():
        raise CheckpointError(f"checkpoint not found: {ckpt}")
    model = entry.factory(ckpt=ckpt, **options)
    if not isinstance(model, nn.Module):
        raise TypeError(f"upstream factory for '{name}' returned {type(model).__name__}, not a torch.nn.Module")
    if getattr(model, "name", None) in (None, "upstream"):
        model.name = name
    if isinstance(getattr(model, "options", None), dict):
        model.options.update(options)
    return model
