"""`bench sweep PLAN.yaml`: a researcher's own study, expanded into the same stages as `bench reproduce`.

A plan names upstreams (registered names, entry points, `module:factory`, `hear:` / `s3prl:` names,
each with an optional `ckpt`, `options` and `label`), tasks (each on the built-in mini-benchmark of
`profile` or on a real corpus at `dataset`), protocols, seeds and an optional lr grid:

    profile: mini                    # built-in data for tasks without a dataset path (tiny | mini)
    seeds: 3                         # seeds 0..2, or a list: [0, 1, 2]
    protocols: [linear, weighted]    # default for tasks that do not list their own
    lrs: [1e-3, 1e-4]                # optional: the lr grid of every trained head (default: the protocol's)
    upstreams:
      - fbank
      - {name: m2d, ckpt: runs/m2d/base/checkpoint.pt, label: m2d-base}
      - {name: mypkg.models:factory, options: {size: small}}
    tasks:
      - esc50
      - {name: icbhi, dataset: /data/ICBHI_final_database, protocols: [linear]}
      - {name: speech_commands, options: {folds: [fold1]}}

Every stage is one (upstream, task, protocol, seed): `eval-<label>-<task>-<protocol>[-seed<k>]`, keyed
by its parameters, so a re-run skips what is done and an edited plan runs only what changed. Every
name, path and protocol is checked here, before anything runs, and a bad one is one line.
"""

from __future__ import annotations

import re
from pathlib import Path

from tasks.registry import TASKS

from ..errors import UserError
from .stage import Stage, seed_suffix

__all__ = ["load_plan", "expand", "PLAN_KEYS"]

PLAN_KEYS = {"profile", "seeds", "protocols", "lrs", "upstreams", "tasks"}
UPSTREAM_KEYS = {"name", "ckpt", "options", "label"}
TASK_KEYS = {"name", "dataset", "protocols", "options"}
STAGE_OPTIONS = {"folds", "precision", "lrs"}  # per-task options a stage carries into `bench run`


def load_plan(path: str | Path) -> dict:
    """Read a plan file (YAML; JSON is YAML too)."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{path}: no such plan file (give a YAML plan, or the built-in plan name `reproduce`)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a plan is a mapping with upstreams and tasks (see docs/reproduce.md)")
    return data


def _entries(items, kind: str, keys: set[str]) -> list[dict]:
    if not isinstance(items, list) or not items:
        raise UserError(f"plan: `{kind}` must be a non-empty list")
    out = []
    for item in items:
        entry = {"name": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise UserError(f"plan: each of `{kind}` is a name or a mapping with `name`, got {item!r}")
        extra = set(entry) - keys
        if extra:
            raise UserError(f"plan: {kind} {entry['name']}: unknown key(s) {', '.join(sorted(extra))}; "
                            f"use {', '.join(sorted(keys))}")
        out.append(entry)
    return out


def _seeds(value) -> list[int]:
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                 for s in value) and len(set(value)) == len(value):
        return list(value)
    raise UserError(f"plan: seeds {value!r}: give a count (3 = seeds 0, 1, 2) or a list of distinct seeds >= 0")


def _check_upstream(entry: dict) -> None:
    """The name must resolve (registry, entry point, module:factory) and a given checkpoint must exist."""
    import upstreams
    from upstreams.registry import info

    name = entry["name"]
    if not name.startswith(("hear:", "s3prl:")):
        try:
            info(name)
        except upstreams.UpstreamError as exc:
            raise UserError(f"plan: upstream {name}: {exc}") from None
    ckpt = entry.get("ckpt")
    if ckpt is not None and not Path(str(ckpt)).expanduser().exists():
        raise UserError(f"plan: upstream {name}: ckpt {ckpt}: no such file")
    if not isinstance(entry.get("options", {}), dict):
        raise UserError(f"plan: upstream {name}: options must be a mapping of option -> value")


def _content_sha256(path: str) -> str:
    from upstreams.fileio import sha256_file

    return sha256_file(path) if Path(path).is_file() else "directory"


def _label(entry: dict) -> str:
    """A stage-name-safe label: the plan's `label`, else the name with anything odd replaced by '-'."""
    label = str(entry.get("label") or entry["name"])
    return re.sub(r"[^A-Za-z0-9_.]+", "-", label).strip("-")


def expand(data: dict, profile: str | None = None) -> list[Stage]:
    """The stages of a plan: one data stage for the built-in datasets it uses, then one evaluation per
    upstream x task x protocol x seed."""
    extra = set(data) - PLAN_KEYS
    if extra:
        raise UserError(f"plan: unknown key(s) {', '.join(sorted(extra))}; use {', '.join(sorted(PLAN_KEYS))}")
    profile = profile or data.get("profile", "mini")
    if profile not in ("tiny", "mini"):
        raise UserError(f"plan: profile {profile}: give tiny or mini (real corpora go in a task's `dataset`)")
    seeds = _seeds(data.get("seeds", 1))
    ups = _entries(data.get("upstreams"), "upstreams", UPSTREAM_KEYS)
    tasks = _entries(data.get("tasks"), "tasks", TASK_KEYS)
    for entry in ups:
        _check_upstream(entry)
    labels = [_label(u) for u in ups]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UserError(f"plan: upstream label(s) {', '.join(dup)} appear twice; give each entry its own `label`")
    builtin: set[str] = set()
    evaluations = []
    for t in tasks:
        spec = TASKS.get(t["name"])
        if spec is None:
            raise UserError(f"plan: unknown task {t['name']}; choose from {', '.join(TASKS)}")
        protocols = t.get("protocols") or data.get("protocols") or [spec.default_protocol]
        bad = [p for p in protocols if p not in spec.protocols]
        if bad:
            raise UserError(f"plan: task {spec.name} has no protocol {', '.join(bad)}; "
                            f"choose from {', '.join(spec.protocols)}")
        dataset = t.get("dataset")
        if dataset is not None:
            dataset = str(Path(str(dataset)).expanduser().resolve())
            if not Path(dataset).is_dir():
                raise UserError(f"plan: task {spec.name}: dataset {t['dataset']}: no such directory")
        else:
            builtin.add(spec.dataset)
        options = dict(t.get("options") or {})
        unknown = set(options) - STAGE_OPTIONS
        if unknown:
            raise UserError(f"plan: task {spec.name}: unknown option(s) {', '.join(sorted(unknown))}; "
                            f"use {', '.join(sorted(STAGE_OPTIONS))}")
        if data.get("lrs") and "lrs" not in options:
            options["lrs"] = list(data["lrs"])
        evaluations += [(spec, p, dataset, options) for p in protocols]
    stages = [Stage("data", "data", {"profile": profile, "datasets": sorted(builtin)})] if builtin else []
    ckpt_hashes: dict[str, str] = {}
    for seed in seeds:
        for spec, protocol, dataset, options in evaluations:
            for entry, label in zip(ups, labels):
                params = {"upstream": entry["name"], "task": spec.name, "protocol": protocol, "profile": profile,
                          **({"seed": seed} if seed else {}), **options}
                if entry.get("ckpt"):  # the key holds the weights' hash: new weights at the same path re-run
                    params["ckpt"] = str(Path(str(entry["ckpt"])).expanduser().resolve())
                    params["ckpt_sha256"] = ckpt_hashes.setdefault(params["ckpt"], _content_sha256(params["ckpt"]))
                if entry.get("options"):
                    params["upstream_options"] = dict(entry["options"])
                if dataset:
                    params["dataset"] = dataset
                stages.append(Stage(f"eval-{label}-{spec.name}-{protocol}{seed_suffix(seed)}", "eval", params,
                                    () if dataset else ("data",)))
    return stages
