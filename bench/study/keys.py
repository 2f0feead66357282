"""Stage keys: what decides whether a finished stage is still current.

A key is a sha256 of everything that determines a stage's outputs: its parameters, the identities of
the stages it needs (data manifests, checkpoint hashes). A pretraining run found on disk is adopted
only if its saved config equals the planned one field by field, with runtime fields dropped and paths
replaced by the sha256 of what they point to (`comparable_config`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from upstreams.fileio import sha256_file

__all__ = ["key_of", "comparable_config", "explicit_indexes"]


def key_of(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# Config fields that do not change what a pretraining run learns (runtime, logging, paths whose
# contents are covered by the data stage's manifests or by checkpoint hashes).
_RUNTIME_FIELDS = {("train", k) for k in ("device", "progress", "tensorboard", "prefetch", "checkpoint_every",
                                           "log_every", "stop_after", "threads")}
_RUNTIME_FIELDS |= {("data", "cache_dir"), ("data", "norm_stats")}
_CHECKPOINT_FIELDS = ("init", "base_ckpt")
_INDEX_FIELDS = (("data", "index"), ("noise", "index"))  # corpus lists: compared by contents, not by path


def comparable_config(cfg: dict) -> dict:
    """A run config with runtime fields dropped and checkpoint paths replaced by their contents' sha256."""
    cfg = copy.deepcopy(cfg)
    for section, key in _RUNTIME_FIELDS:
        if isinstance(cfg.get(section), dict):
            cfg[section].pop(key, None)
    for key in _CHECKPOINT_FIELDS:
        if cfg.get(key):
            cfg[key] = _content_id(cfg[key])
    for section, key in _INDEX_FIELDS:
        if isinstance(cfg.get(section), dict) and cfg[section].get(key):
            cfg[section][key] = _content_id(cfg[section][key])
    return cfg


def _content_id(path: str) -> str:
    p = Path(path).expanduser()
    return "sha256:" + sha256_file(p) if p.is_file() else f"missing:{path}"


def explicit_indexes(cfg: dict) -> dict:
    """Overrides naming the corpus index files a config would use by default (so they can be compared)."""
    from upstreams.training.corpus import default_index

    data = cfg.get("data", {})
    out: dict = {}
    if "index" in data and not data["index"]:
        out["data"] = {"index": str(default_index(data.get("corpus", "general"), data.get("profile", "mini")))}
    if isinstance(cfg.get("noise"), dict) and "index" in cfg["noise"] and not cfg["noise"]["index"]:
        out["noise"] = {"index": str(default_index("noise", data.get("profile", "mini")))}
    return out
