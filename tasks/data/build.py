"""Orchestrates the offline mini-benchmark build: one builder per dataset, done-markers, manifests.

Each dataset is written into a temporary directory and renamed into `<root>/<profile>/<name>/`
only when complete, so an interrupted build never leaves something that looks finished. A
dataset whose `MANIFEST.json` records the same builder version, profile and seed is skipped.
The manifest is deterministic (no timestamps): the same profile and seed give the same
manifest hash, which the embedding cache and every result record use as the dataset identity.
Timings and sizes, which vary, go to `BUILD_INFO.json` beside it.
Each dataset is built under a lock in its profile folder (`<root>/<profile>/.<name>.lock`,
`upstreams.locks`): processes or hosts sharing a data root build it once, the others wait and then
find it up to date.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from upstreams.fileio import atomic_directory, atomic_write_json, sha256_bytes, sha256_file
from upstreams.locks import exclusive

from .debian import DebianSources
from .paths import data_root, profile_root, sources_cache

__all__ = [
    "PROFILES",
    "BuildContext",
    "DatasetBuilder",
    "register_builder",
    "builders",
    "build",
    "dataset_dir",
    "read_manifest",
    "manifest_hash",
    "DatasetNotBuiltError",
    "DatasetError",
]

PROFILES = ("tiny", "mini")
MANIFEST = "MANIFEST.json"
BUILD_INFO = "BUILD_INFO.json"


class DatasetNotBuiltError(FileNotFoundError):
    """A task needs a dataset that is neither built nor given with --dataset."""


class DatasetError(ValueError):
    """A dataset's content is unusable: a malformed metadata line, a file that differs from its manifest...

    The message names the file (and line) and what to do; `bench.errors.user_error_types` prints it as
    one line. It derives from `ValueError`, what loaders raised for such content before.
    """


@dataclass
class BuildContext:
    """What a builder gets: where to write, where other datasets are, sources and seeded randomness."""

    name: str
    profile: str
    seed: int
    out: Path  # temporary directory that becomes <root>/<profile>/<name>
    root: Path  # <data root>/<profile>; finished datasets this one `requires` are under it
    sources: DebianSources
    workers: int = 1
    summary: dict = field(default_factory=dict)  # builder fills: hours, clips, classes, voices...

    def rng(self, *keys: object) -> np.random.Generator:
        """An independent, reproducible random stream for (dataset, seed, *keys)."""
        material = "/".join([self.name, str(self.seed), *map(str, keys)]).encode()
        return np.random.default_rng(int(sha256_bytes(material)[:16], 16))

    def dataset(self, name: str) -> Path:
        """Directory of an already built dataset this builder depends on."""
        path = self.root / name
        if not (path / MANIFEST).exists():
            raise DatasetNotBuiltError(f"dataset '{name}' must be built before '{self.name}'")
        return path


@dataclass(frozen=True)
class DatasetBuilder:
    name: str
    version: str  # bump whenever the output would change; part of the skip key
    build: Callable[[BuildContext], None]
    description: str = ""
    requires: tuple[str, ...] = ()


_BUILDERS: dict[str, DatasetBuilder] = {}


def register_builder(builder: DatasetBuilder) -> DatasetBuilder:
    if builder.name in _BUILDERS:
        raise ValueError(f"dataset builder '{builder.name}' registered twice")
    _BUILDERS[builder.name] = builder
    return builder


def builders() -> dict[str, DatasetBuilder]:
    from . import catalog  # noqa: F401  (registers the built-in builders)

    return dict(_BUILDERS)


def dataset_dir(name: str, profile: str = "mini", root: Path | None = None) -> Path:
    return profile_root(profile, root) / name


def read_manifest(path: Path) -> dict | None:
    f = Path(path) / MANIFEST
    if not f.exists():
        return None
    return json.loads(f.read_text())


def manifest_hash(path: Path) -> str:
    """Identity of a dataset directory: sha256 of its MANIFEST.json, or a fingerprint for real corpora.

    Real corpora have no manifest; here their fingerprint is the sorted list of (relative path, size)
    of every file, which misses a file replaced by one of the same size. Runs and the embedding cache
    therefore use `tasks.data.identity`, which hashes the content of exactly the files a task reads
    (memoised per file version) and checks each against the manifest's per-file sha256.
    """
    path = Path(path)
    m = path / MANIFEST
    if m.exists():
        return sha256_file(m)
    lines = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            lines.append(f"{p.relative_to(path)}\t{p.stat().st_size}")
    return "fp-" + sha256_bytes("\n".join(lines).encode())


def _file_hashes(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            if p.name in (MANIFEST, BUILD_INFO):
                continue
            out[str(p.relative_to(root))] = sha256_file(p)
    return dict(sorted(out.items()))


def _requires_hashes(proot: Path, builder: DatasetBuilder) -> dict[str, str]:
    """Manifest hashes of the datasets `builder` is made from: a rebuilt input makes it stale."""
    return {dep: manifest_hash(proot / dep) for dep in builder.requires if (proot / dep / MANIFEST).exists()}


def _is_current(path: Path, builder: DatasetBuilder, profile: str, seed: int) -> bool:
    m = read_manifest(path)
    return (
        bool(m)
        and (m.get("builder_version"), m.get("profile"), m.get("seed")) == (builder.version, profile, seed)
        and m.get("requires", {}) == _requires_hashes(path.parent, builder)
    )


def _order(names: Iterable[str], registry: dict[str, DatasetBuilder]) -> list[str]:
    order: list[str] = []

    def visit(n: str, stack: tuple[str, ...] = ()) -> None:
        if n not in registry:
            raise ValueError(f"unknown dataset '{n}'; known: {', '.join(sorted(registry))}")
        if n in stack:
            raise ValueError(f"dataset dependency cycle: {' -> '.join(stack + (n,))}")
        for dep in registry[n].requires:
            visit(dep, stack + (n,))
        if n not in order:
            order.append(n)

    for n in names:
        visit(n)
    return order


def build(
    profile: str = "mini",
    root: Path | None = None,
    only: Iterable[str] | None = None,
    seed: int = 0,
    force: bool = False,
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Build (or skip) every dataset of `profile`; returns name -> directory."""
    if profile not in PROFILES:
        raise ValueError(f"unknown data profile '{profile}'; choose one of {', '.join(PROFILES)}")
    registry = builders()
    names = _order(only if only else list(registry), registry)
    proot = profile_root(profile, root)
    proot.mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, os.cpu_count() or 1)
    done: dict[str, Path] = {}
    for name in names:
        builder = registry[name]
        dest = proot / name
        if not force and _is_current(dest, builder, profile, seed):
            log(f"[data] {name}: up to date ({dest})")
        else:
            with exclusive(proot / f".{name}.lock", f"the {profile} build of {name}", log) as waited:
                if waited and _is_current(dest, builder, profile, seed):  # built by the process we waited for
                    log(f"[data] {name}: built by another process ({dest})")
                else:
                    _build_one(builder, profile, seed, proot, root, workers, log)
        done[name] = dest
    return done


def _build_one(builder: DatasetBuilder, profile: str, seed: int, proot: Path, root: Path | None, workers: int,
               log: Callable[[str], None]) -> None:
    name, dest = builder.name, proot / builder.name
    log(f"[data] {name}: building ({profile}, seed {seed}) -> {dest}")
    t0 = time.perf_counter()
    with atomic_directory(dest) as tmp:
        ctx = BuildContext(
            name=name,
            profile=profile,
            seed=seed,
            out=tmp,
            root=proot,
            sources=DebianSources(sources_cache(root)),
            workers=workers,
        )
        builder.build(ctx)
        files = _file_hashes(tmp)
        manifest = {
            "dataset": name,
            "builder_version": builder.version,
            "profile": profile,
            "seed": seed,
            "summary": ctx.summary,
            **({"requires": _requires_hashes(proot, builder)} if builder.requires else {}),
            **ctx.sources.provenance(),
            "files": files,
        }
        atomic_write_json(tmp / "MANIFEST.json", manifest)
        size = sum((tmp / f).stat().st_size for f in files)
        atomic_write_json(
            tmp / BUILD_INFO,
            {"build_seconds": round(time.perf_counter() - t0, 2), "bytes": size, "workers": workers},
        )
    log(f"[data] {name}: done in {time.perf_counter() - t0:.1f} s, {size / 1e6:.1f} MB, {len(files)} files")


def info(profile: str | None = None, root: Path | None = None) -> list[dict]:
    """One row per built dataset: profile, name, files, size, build time, manifest hash, summary."""
    rows = []
    base = data_root(root)
    for prof in PROFILES if profile is None else (profile,):
        proot = base / prof
        if not proot.exists():
            continue
        for d in sorted(p for p in proot.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            m = read_manifest(d)
            if m is None:
                continue
            bi = json.loads((d / BUILD_INFO).read_text()) if (d / BUILD_INFO).exists() else {}
            rows.append(
                {
                    "profile": prof,
                    "dataset": d.name,
                    "files": len(m.get("files", {})),
                    "mb": round(bi.get("bytes", 0) / 1e6, 1),
                    "build_s": bi.get("build_seconds"),
                    "manifest_sha256": manifest_hash(d)[:16],
                    "summary": m.get("summary", {}),
                    "path": str(d),
                }
            )
    return rows
