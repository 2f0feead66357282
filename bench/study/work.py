"""The work of each stage kind: build data, pretrain, evaluate. Runs wherever an executor puts it.

`StageWork` holds only what a stage needs to compute (folders, profile, the outputs of the stages it
needs) and returns `(outputs, note)`; it writes checkpoints and records, never done-markers or the
ledger: those are the parent's (`bench.study.study.Study`), whichever executor ran the stage.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from upstreams.fileio import sha256_file

from ..errors import UserError
from .keys import comparable_config, explicit_indexes, key_of
from .plans import PRETRAINED
from .stage import DATA_UNCHANGED, Stage, StageResult, seed_suffix

__all__ = ["StageWork"]


class StageWork:
    """Computes stages under `out` (results) and `runs` (pretraining checkpoints)."""

    def __init__(self, out: str | Path, profile: str, runs: str | Path | None = None, data_root: str | None = None,
                 cache_root: str | None = None, force: tuple[str, ...] = (), log: Callable[[str], None] = print,
                 progress: bool = False):
        from upstreams.runs import runs_root

        self.out = Path(out).expanduser().resolve()
        self.profile = profile
        self.runs = Path(runs).expanduser().resolve() if runs else runs_root()
        self.data_root = data_root
        self.cache_root = cache_root
        self.force = set(force)
        self.log = log
        self.progress = progress
        self.results: dict[str, StageResult] = {}

    def read_marker(self, stage: Stage) -> dict | None:
        """The stage's done-marker, if any (the data stage compares manifests with it; only the parent writes it)."""
        try:
            return json.loads((self.out / "stages" / f"{stage.name}.json").read_text())
        except (OSError, ValueError):
            return None

    def _run_data(self, stage: Stage, forced: bool) -> tuple[dict, str]:
        """Always consulted: the builders themselves skip datasets whose manifests are current."""
        from tasks.data import build, manifest_hash

        t0 = time.perf_counter()
        built = build(self.profile, root=self.data_root, only=stage.params["datasets"], force=False,
                      log=lambda m: self.log(m))
        manifests = {name: manifest_hash(path) for name, path in sorted(built.items())}
        marker = self.read_marker(stage)
        seconds = time.perf_counter() - t0
        if marker and marker.get("outputs", {}).get("manifests") == manifests:
            seconds = float(marker.get("seconds", seconds))  # the original build time, not the check
            return {"manifests": manifests, "identity": key_of(manifests), "seconds": seconds}, DATA_UNCHANGED
        return {"manifests": manifests, "identity": key_of(manifests), "seconds": seconds}, ""

    def _checkpoint_of(self, name: str) -> str:
        return self.results[f"pretrain-{name}"].outputs["checkpoint"]

    def _run_pretrain(self, stage: Stage, forced: bool) -> tuple[dict, str]:
        before = os.environ.get("BENCH_DATA")
        if self.data_root:  # the pretraining code finds its corpora through $BENCH_DATA
            os.environ["BENCH_DATA"] = str(Path(self.data_root).expanduser().resolve())
        try:
            return self._pretrain(stage, forced)
        finally:
            if self.data_root:
                if before is None:
                    os.environ.pop("BENCH_DATA", None)
                else:
                    os.environ["BENCH_DATA"] = before

    def _pretrain(self, stage: Stage, forced: bool) -> tuple[dict, str]:
        from upstreams.training.checkpoint import load_checkpoint
        from upstreams.training.config import merge, to_dict
        from upstreams.training.run import CHECKPOINT_NAME, get_method, pretrain, resolve_config

        p = stage.params
        method = get_method(p["method"])
        extra: dict = {}
        if p.get("init"):
            extra["init"] = self._checkpoint_of(p["init"])
        if p.get("base"):
            extra.update(base=p["base"], base_ckpt=self._checkpoint_of(p.get("base_run", p["base"])), base_options=[])
        overrides = merge(p.get("overrides", {}), extra)
        cfg, _ = resolve_config(method, p["preset"], overrides)
        overrides = merge(overrides, explicit_indexes(to_dict(cfg)))
        cfg, _ = resolve_config(method, p["preset"], overrides)
        planned = comparable_config(to_dict(cfg))
        # found by `bench run --upstream NAME` (seed 0); seed k's runs sit beside it
        variant = f"-{p['variant']}" if p.get("variant") else ""  # e.g. the m2d speech preset beside the clip one
        out_dir = self.runs / p["method"] / f"reproduce-{self.profile}{variant}{seed_suffix(int(p.get('seed', 0)))}"
        ckpt = out_dir / CHECKPOINT_NAME
        note = ""
        resume = False
        if ckpt.exists() and not forced:
            saved = load_checkpoint(ckpt)
            same = saved.get("method") == method.name and comparable_config(saved.get("config", {})) == planned
            if not same:
                raise UserError(f"{out_dir} holds a {saved.get('method')} run with a different config than this "
                                f"reproduction plans; move it away or pass --force {stage.name}")
            done, total = int(saved["step"]), int(saved["total_steps"])
            resume = done < total
            note = f"resumed at step {done}/{total}" if resume else "adopted a finished run with the planned config"
            del saved
        elif ckpt.exists():
            stale = out_dir.with_name(f"{out_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            out_dir.rename(stale)
            self.log(f"[reproduce] {stage.name}: --force: previous run moved to {stale}")
        if not ckpt.exists() or resume:
            runtime = {"train": {"progress": self.progress}}
            pretrain(method.name, config=None if resume else p["preset"], out=str(out_dir), resume=resume,
                     overrides=runtime if resume else merge(overrides, runtime),
                     log=lambda m: self.log(f"[{stage.name}] {m}"))
        saved = load_checkpoint(ckpt)
        log_tail = _last_log_line(out_dir / "log.jsonl")
        sha = sha256_file(ckpt)
        outputs = {"checkpoint": str(ckpt), "checkpoint_sha256": sha, "identity": sha,
                   "step": int(saved["step"]), "total_steps": int(saved["total_steps"]),
                   "final_loss": log_tail.get("loss"), "seconds": float(saved.get("wall_s", 0.0))}
        return outputs, note

    def _run_eval(self, stage: Stage, forced: bool) -> tuple[dict, str]:
        from ..run import RunRequest, run

        p = stage.params
        up = p["upstream"]
        run_stage = p.get("checkpoint_of", f"pretrain-{up}")
        options = dict(p.get("upstream_options", {}))
        if p.get("like_of"):
            options["like"] = self.results[p["like_of"]].outputs["checkpoint"]
        ckpt = self.results[run_stage].outputs["checkpoint"] if run_stage in self.results else p.get("ckpt")
        req = RunRequest(upstream=up, task=p["task"], protocol=p["protocol"], ckpt=ckpt, dataset=p.get("dataset"),
                         upstream_options=options, seed=int(p.get("seed", 0)),
                         profile=p.get("profile", self.profile), data_root=self.data_root, results=str(self.out),
                         lrs=p.get("lrs"), folds=p.get("folds"), precision=p.get("precision", "fp32"),
                         cache_root=self.cache_root, progress=self.progress)
        record, path = run(req, log=lambda m: self.log(f"[{stage.name}] {m}"))
        outputs = {"record": str(Path(path).relative_to(self.out)), "score": record.score, "metric": record.metric,
                   "checkpoint_sha256": None, "identity": key_of([record.score, record.metric]),
                   "seconds": record.wall_time_s}
        if up in PRETRAINED and run_stage not in self.results and not p.get("ckpt"):  # quickstart: the latest run
            outputs["upstream_checkpoint"] = record.checkpoint
        return outputs, ""


def _last_log_line(path: Path) -> dict:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}
