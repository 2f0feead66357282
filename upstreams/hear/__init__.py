"""HEAR 2021 modules for every registered upstream: `upstreams.hear.<name>`.

`hear-validator upstreams.hear.m2d -m CKPT` and hear-eval-kit import a module by name, so each
upstream needs a real importable module. Rather than one file per upstream (which third-party
upstreams registered through entry points could not have), a meta-path finder creates
`upstreams.hear.<name>` on import for any name in `upstreams.names()`, backed by `api.py`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

from . import api

__all__ = ["module_for", "api"]

_PREFIX = __name__ + "."


def module_for(upstream_name: str) -> types.ModuleType:
    """Build the HEAR module for `upstream_name` (also what the import hook returns)."""
    mod = types.ModuleType(_PREFIX + upstream_name, f"HEAR 2021 API for the '{upstream_name}' upstream.")
    mod.load_model = api.make_load_model(upstream_name)
    mod.get_timestamp_embeddings = api.get_timestamp_embeddings
    mod.get_scene_embeddings = api.get_scene_embeddings
    mod.UPSTREAM = upstream_name
    return mod


class _HearFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_PREFIX) or fullname.count(".") != 2:
            return None
        name = fullname[len(_PREFIX):]
        if name == "api":
            return None
        import upstreams

        if name not in upstreams.names():
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return module_for(spec.name[len(_PREFIX):])

    def exec_module(self, module):
        return None


if not any(isinstance(f, _HearFinder) for f in sys.meta_path):
    sys.meta_path.append(_HearFinder())
