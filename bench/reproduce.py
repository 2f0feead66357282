"""`bench reproduce`: the whole study as a list of stages, each skipped when its outputs are current.

Stages run in order: build the data; pretrain `m2d`; further-pretrain `m2dx` on the respiratory
corpus with background noise (initialised from `m2d`); SCORE-tune `m2d`; evaluate every upstream on
every task; then render the leaderboard, per-task tables, plots and the claims report.

Resuming (the hear-eval-kit idea of done-markers, with hashes): every finished stage writes
`<out>/stages/<stage>.json` holding its *key* - a sha256 of everything that determines its outputs
(its parameters, the data manifests, the sha256 of the checkpoints it reads) - and its outputs. On
the next run a stage is skipped when its marker's key equals the newly computed key and its output
files still exist (checkpoints are re-hashed). A pretraining stage interrupted mid-run resumes from
its last checkpoint. Source-code changes do not invalidate stages by themselves: pass `--force`
with stage names (or `all`) to redo them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from upstreams.fileio import atomic_write_json, atomic_write_text, dumps_strict, sha256_file

from .errors import UserError

__all__ = ["Stage", "EVALUATIONS", "plan", "Reproduction", "reproduce"]

UPSTREAMS = ("fbank", "random", "m2d", "m2dx", "score")
PRETRAINED = ("m2d", "m2dx", "score")  # upstreams whose checkpoint comes from a pretraining stage
DATASETS = ("librispeech", "quesst14", "speech_commands", "esc50", "icbhi", "pretrain")
TASK_DATASET = {"asr": "librispeech", "pr": "librispeech", "qbe": "quesst14", "esc50": "esc50",
                "speech_commands": "speech_commands", "icbhi": "icbhi"}

# (task, protocol, options) in the order they run: frozen SUPERB/HEAR protocols first, fine-tuning last.
# Fine-tuning on CPU is the expensive part, so on the mini-benchmark it uses one learning rate, ESC-50
# one fold and bf16 autocast (1.5x faster than fp32 for the mini ViT's forward + backward here); the
# records say so. `knn` costs under a second on cached features; HEAR's `mlp` (8 grid points x folds) adds
# 9-11 CPU-minutes per upstream and seed on mini, so it is left to `bench run --protocol mlp`.
EVALUATIONS: dict[str, list[tuple[str, str, dict]]] = {
    "mini": [
        ("esc50", "weighted", {}), ("speech_commands", "weighted", {}), ("icbhi", "weighted", {}),
        ("qbe", "dtw", {}),
        ("esc50", "linear", {}), ("speech_commands", "linear", {}), ("icbhi", "linear", {}),
        ("esc50", "knn", {}), ("speech_commands", "knn", {}), ("icbhi", "knn", {}),
        ("pr", "weighted", {}), ("asr", "weighted", {}),
        ("icbhi", "finetune", {"lrs": [3e-3], "precision": "bf16"}),
        ("esc50", "finetune", {"lrs": [3e-3], "folds": ["fold1"], "precision": "bf16"}),
    ],
    # `bench quickstart`: the clip tasks on mini, frozen, no pretraining stage
    "quick": [
        ("esc50", "weighted", {}), ("speech_commands", "weighted", {}), ("icbhi", "weighted", {}),
        ("esc50", "linear", {}), ("speech_commands", "linear", {}), ("icbhi", "linear", {}),
        ("esc50", "knn", {}), ("speech_commands", "knn", {}), ("icbhi", "knn", {}),
    ],
    "tiny": [
        ("esc50", "weighted", {"folds": ["fold1"]}), ("speech_commands", "weighted", {}), ("icbhi", "weighted", {}),
        ("qbe", "dtw", {}), ("icbhi", "linear", {"lrs": [1e-3]}),
        ("pr", "weighted", {"lrs": [1e-2]}), ("asr", "weighted", {"lrs": [1e-3]}),
        ("icbhi", "finetune", {"lrs": [3e-3]}), ("esc50", "finetune", {"lrs": [3e-3], "folds": ["fold1"]}),
    ],
}
DATA_UNCHANGED = "data unchanged since the last run"  # the data stage's note when it only checked manifests
INVOCATIONS = "invocations.jsonl"  # one line per `bench reproduce` that ran stages into this directory
NO_FINETUNE = {"fbank"}  # nothing to fine-tune in a fixed filterbank
# `random` must have the architecture the pretrained models have, or "M2D beats no pretraining" compares sizes
UPSTREAM_OPTIONS = {"tiny": {"random": {"arch": "tiny"}}, "mini": {}}

PRETRAIN_PRESETS = {"mini": {"m2d": "mini", "m2dx": "mini_respiratory", "score": "mini"},
                    "tiny": {"m2d": "tiny", "m2dx": "tiny", "score": "tiny"}}
# Tiny presets are sized for the test-suite; the reproduction test still needs them short.
# The mini reproduction shortens the `mini` presets (m2d 1200, m2dx 600, score 300 steps: about
# 2 h 20 min on 2 CPU cores per seed) so that data + pretraining + evaluations of 3 seeds fit on two
# CPU cores: m2d 200 steps (about 5 min with one thread), m2dx 75, score 50, warm-up 10 %.
PRETRAIN_OVERRIDES = {"mini": {"m2d": {"train": {"steps": 200, "warmup_steps": 20}},
                               "m2dx": {"train": {"steps": 75, "warmup_steps": 8}},
                               "score": {"train": {"steps": 50, "warmup_steps": 5}}},
                      "tiny": {"m2d": {"train": {"steps": 12}}, "m2dx": {"train": {"steps": 6}},
                                           "score": {"train": {"steps": 6}}}}


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str  # data | pretrain | eval
    params: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()


def seed_suffix(seed: int) -> str:
    """Stage and run-folder suffix of a seed: "" for seed 0 (so one-seed studies keep their names)."""
    return "" if seed == 0 else f"-seed{seed}"


def plan(profile: str = "mini", upstreams: tuple[str, ...] = UPSTREAMS, tasks: tuple[str, ...] | None = None,
         protocols: tuple[str, ...] | None = None, quick: bool = False, seeds: int = 1) -> list[Stage]:
    """The stages of a reproduction on `profile`, restricted to some upstreams/tasks/protocols if asked.

    `seeds` repeats pretraining *and* evaluation per seed (pretraining variance is the one that
    matters): seed k pretrains its own m2d (train.seed = k), m2dx and score start from that m2d, and
    every evaluation of seed k trains its head with seed k. `random` is the step-0 twin of seed k's
    m2d run (`random -o like=CKPT`) whenever m2d is pretrained in the plan, so every pretrained model
    is compared with its own initialisation.

    `quick` (bench quickstart) evaluates on the clip tasks only and never pretrains: pretrained
    upstreams are used when a finished run of theirs exists (`upstreams.runs`), else left out.
    """
    if profile not in ("tiny", "mini"):
        raise UserError(f"--profile {profile}: bench reproduce runs on tiny or mini")
    if not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"--seeds {seeds}: give the number of seeds, 1 or more (seeds 0..N-1 are run)")
    unknown = [u for u in upstreams if u not in UPSTREAMS]
    if unknown:
        raise UserError(f"--upstreams: unknown {', '.join(unknown)}; choose from {', '.join(UPSTREAMS)}")
    if tasks is not None:
        bad = [t for t in tasks if t not in TASK_DATASET]
        if bad:
            raise UserError(f"--tasks: unknown {', '.join(bad)}; choose from {', '.join(TASK_DATASET)}")
    wanted = set(upstreams)
    if quick:
        evaluations = EVALUATIONS["quick"]
        datasets = sorted({TASK_DATASET[t] for t, _, _ in evaluations})
        return [Stage("data", "data", {"profile": profile, "datasets": datasets})] + [
            st for k in range(seeds) for st in _eval_stages(evaluations, profile, [u for u in UPSTREAMS if u in wanted],
                                                            tasks, protocols, pretrained=(), seed=k)]
    stages = [Stage("data", "data", {"profile": profile, "datasets": list(DATASETS)})]
    presets, overrides = PRETRAIN_PRESETS[profile], PRETRAIN_OVERRIDES[profile]
    pretrained = tuple(u for u in PRETRAINED if u in wanted)
    if pretrained:  # m2dx and score start from m2d
        pretrained = ("m2d",) + tuple(u for u in pretrained if u != "m2d")
    evals = []
    for k in range(seeds):
        sfx = seed_suffix(k)
        seed_set = {"train": {"seed": k}} if k else {}
        for method in pretrained:
            params = {"method": method, "preset": presets[method],
                      "overrides": _merged(overrides.get(method, {}), seed_set)}
            needs = ("data",) if method == "m2d" else ("data", f"pretrain-m2d{sfx}")
            if method == "m2dx":
                params["init"] = f"m2d{sfx}"
            if method == "score":
                params["base"] = "m2d"
                params["base_run"] = f"m2d{sfx}"
            if k:
                params["seed"] = k
            stages.append(Stage(f"pretrain-{method}{sfx}", "pretrain", params, needs))
        evals += _eval_stages(EVALUATIONS[profile], profile, [u for u in UPSTREAMS if u in wanted], tasks, protocols,
                              pretrained=pretrained, seed=k, twin=bool(pretrained))
    return stages + evals


def _merged(a: dict, b: dict) -> dict:
    from upstreams.training.config import merge

    return merge(a, b) if b else a


def _eval_stages(evaluations, profile: str, ups: list[str], tasks, protocols, pretrained, seed: int = 0,
                 twin: bool = False) -> list[Stage]:
    sfx = seed_suffix(seed)
    stages = []
    for task, protocol, options in evaluations:
        if (tasks is not None and task not in tasks) or (protocols is not None and protocol not in protocols):
            continue
        for up in ups:
            if protocol == "finetune" and up in NO_FINETUNE:
                continue
            needs = ("data",) + ((f"pretrain-{up}{sfx}",) if up in pretrained else ())
            params = {"upstream": up, "task": task, "protocol": protocol, "profile": profile, **options}
            if seed:
                params["seed"] = seed
            if up in pretrained and sfx:
                params["checkpoint_of"] = f"pretrain-{up}{sfx}"
            if up == "random" and twin:  # the step-0 twin of this seed's m2d run
                params["like_of"] = f"pretrain-m2d{sfx}"
                needs = needs + (f"pretrain-m2d{sfx}",)
            elif UPSTREAM_OPTIONS[profile].get(up):
                params["upstream_options"] = UPSTREAM_OPTIONS[profile][up]
            stages.append(Stage(f"eval-{up}-{task}-{protocol}{sfx}", "eval", params, needs))
    return stages


def _key(obj) -> str:
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


def _explicit_indexes(cfg: dict) -> dict:
    """Overrides naming the corpus index files a config would use by default (so they can be compared)."""
    from upstreams.training.corpus import default_index

    data = cfg.get("data", {})
    out: dict = {}
    if "index" in data and not data["index"]:
        out["data"] = {"index": str(default_index(data.get("corpus", "general"), data.get("profile", "mini")))}
    if isinstance(cfg.get("noise"), dict) and "index" in cfg["noise"] and not cfg["noise"]["index"]:
        out["noise"] = {"index": str(default_index("noise", data.get("profile", "mini")))}
    return out


@dataclass
class StageResult:
    name: str
    status: str  # done | skipped | failed
    seconds: float
    outputs: dict
    note: str = ""


class Reproduction:
    """Runs a plan under `out` (results) and `runs` (pretraining checkpoints), with done-markers."""

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

    # -- markers -------------------------------------------------------------------------------
    def marker_path(self, stage: Stage) -> Path:
        return self.out / "stages" / f"{stage.name}.json"

    def read_marker(self, stage: Stage) -> dict | None:
        p = self.marker_path(stage)
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def stage_key(self, stage: Stage) -> str:
        inputs = {n: self.results[n].outputs.get("identity") for n in stage.needs}
        return _key({"stage": stage.name, "params": stage.params, "inputs": inputs})

    def _outputs_intact(self, outputs: dict, need_checkpoint: bool = True) -> bool:
        """`need_checkpoint=False` (rendering only): the committed record is the output that matters; the
        checkpoint that produced it lives under `runs/`, which a fresh checkout does not have."""
        ckpt = outputs.get("checkpoint")
        if need_checkpoint and ckpt and (not Path(ckpt).is_file()
                                         or sha256_file(ckpt) != outputs.get("checkpoint_sha256")):
            return False
        rec = outputs.get("record")
        return not rec or (self.out / rec).is_file()

    # -- running -------------------------------------------------------------------------------
    def run(self, stages: list[Stage], render_only: bool = False, jobs: int = 1) -> list[StageResult]:
        """Run (or skip) every stage; with `render_only`, run nothing and mark unfinished stages "not run".

        `jobs` > 1 runs independent stages at once in worker processes (see `_run_parallel`)."""
        names = {s.name for s in stages}
        unknown = self.force - names - {"all"}
        if unknown:
            raise UserError(f"--force: no stage named {', '.join(sorted(unknown))}; stages: {', '.join(s.name for s in stages)}")
        if jobs > 1 and not render_only:
            self._run_parallel(stages, jobs)
        else:
            for stage in stages:
                key = self._prepare(stage, render_only)
                if key is not None:
                    self._execute_here(stage, key)
        return [self.results[s.name] for s in stages]

    def _forced(self, stage: Stage) -> bool:
        return "all" in self.force or stage.name in self.force

    def _prepare(self, stage: Stage, render_only: bool = False) -> str | None:
        """Settle a stage whose needs are settled without running it (skipped, not run, failed need), or
        return its key when it has to run."""
        missing = [n for n in stage.needs if n not in self.results or self.results[n].status in ("failed", "not run")]
        if missing:
            status = "not run" if render_only else "failed"
            self.results[stage.name] = StageResult(stage.name, status, 0.0, {}, f"needs {', '.join(missing)}")
            self.log(f"[reproduce] {stage.name}: not run (needs {', '.join(missing)})")
            return None
        key = self.stage_key(stage)
        marker = self.read_marker(stage)
        if (not self._forced(stage) and marker and marker.get("key") == key and stage.kind != "data"
                and self._outputs_intact(marker.get("outputs", {}), need_checkpoint=not render_only)):
            self.results[stage.name] = StageResult(stage.name, "skipped", float(marker.get("seconds", 0.0)),
                                                   marker["outputs"], marker.get("note", ""))
            self.log(f"[reproduce] {stage.name}: up to date, skipped")
            return None
        if render_only and stage.kind != "data":
            self.results[stage.name] = StageResult(stage.name, "not run", 0.0, {}, "no finished output")
            self.log(f"[reproduce] {stage.name}: not run (--render-only)")
            return None
        return key

    def _execute_here(self, stage: Stage, key: str) -> None:
        self.log(f"[reproduce] {stage.name}: running")
        t0 = time.perf_counter()
        try:
            outputs, note = getattr(self, f"_run_{stage.kind}")(stage, self._forced(stage))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # one failed evaluation must not lose the others; the report lists it
            if stage.kind != "eval":
                raise
            self._record_failure(stage, exc, time.perf_counter() - t0)
            return
        self._record_done(stage, key, outputs, note, time.perf_counter() - t0)

    def _record_failure(self, stage: Stage, exc: BaseException, seconds: float) -> None:
        self.results[stage.name] = StageResult(stage.name, "failed", seconds, {}, f"{type(exc).__name__}: {exc}")
        self.log(f"[reproduce] {stage.name}: FAILED ({type(exc).__name__}: {exc})")

    def _record_done(self, stage: Stage, key: str, outputs: dict, note: str, elapsed: float) -> None:
        seconds = outputs.pop("seconds", None) or elapsed
        self.results[stage.name] = StageResult(stage.name, "done", seconds, outputs, note)
        from .records import portable_paths

        self.log(f"[reproduce] {stage.name}: done in {seconds:.0f} s" + (f" ({note})" if note else ""))
        old = self.read_marker(stage)
        if old and old.get("key") == key and old.get("outputs") == portable_paths(outputs):
            return  # a stage that only confirmed its outputs (the data check) leaves its marker as it was
        atomic_write_json(self.marker_path(stage), {"stage": stage.name, "key": key, "params": stage.params,
                                                    "outputs": portable_paths(outputs), "seconds": round(seconds, 2),
                                                    "note": note, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def _run_parallel(self, stages: list[Stage], jobs: int) -> None:
        """Run stages `jobs` at a time in worker processes with cores // jobs threads each.

        Most of the mini study is single-threaded work (frozen heads, CTC heads, DTW, fine-tuning with
        one thread), so one job leaves a core idle most of the time. A stage starts once its needs are
        settled; among ready stages pretraining goes first (it unblocks the most), then the longest
        expected (`STAGE_MINUTES`), so that no long stage is left for the end. Two stages that would
        extract the same upstream's features of the same dataset never run together: the second reads
        the first's cache instead of computing it again. Data stages run here, in this process. A
        failed pretraining stops new stages from starting, lets the running ones finish, then raises.
        """
        import concurrent.futures as cf
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // jobs)
        spec = {"out": str(self.out), "profile": self.profile, "runs": str(self.runs), "data_root": self.data_root,
                "cache_root": self.cache_root, "progress": self.progress}
        waiting = list(stages)
        ready: list[tuple[Stage, str]] = []
        running: dict[cf.Future, tuple[Stage, str, float]] = {}
        fatal: BaseException | None = None
        pool = cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_worker_init, initargs=(threads,))
        try:
            while waiting or ready or running:
                for stage in [s for s in waiting if all(n in self.results for n in s.needs)]:
                    waiting.remove(stage)
                    key = self._prepare(stage)
                    if key is None:
                        continue
                    if stage.kind == "data":
                        self._execute_here(stage, key)
                    else:
                        ready.append((stage, key))
                if any(all(n in self.results for n in s.needs) for s in waiting):
                    continue  # a stage settled just now unblocked others: settle those before launching
                busy = {_resource(s) for s, _, _ in running.values()} - {None}
                for stage, key in sorted(ready, key=lambda sk: -_priority(sk[0])):
                    if fatal is not None or len(running) >= jobs:
                        break
                    if _resource(stage) in busy:
                        continue
                    ready.remove((stage, key))
                    busy.add(_resource(stage))
                    self.log(f"[reproduce] {stage.name}: running (worker, {threads} thread{'s' * (threads > 1)})")
                    needs = {n: self.results[n] for n in stage.needs}
                    fut = pool.submit(_run_stage_in_worker, spec, stage, needs, self._forced(stage))
                    running[fut] = (stage, key, time.perf_counter())
                if not running:  # with nothing running every ready stage was launchable, so ready is empty
                    if fatal is not None:
                        raise fatal
                    for stage in waiting:  # needs that no stage of the plan provides: reported as one job would
                        self._prepare(stage)
                    break
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    stage, key, t0 = running.pop(fut)
                    try:
                        outputs, note = fut.result()
                    except Exception as exc:
                        if stage.kind != "eval":
                            self.log(f"[reproduce] {stage.name}: FAILED ({type(exc).__name__}: {exc}); "
                                     "waiting for the running stages, starting no new ones")
                            fatal = fatal or exc
                        else:
                            self._record_failure(stage, exc, time.perf_counter() - t0)
                        continue
                    self._record_done(stage, key, outputs, note, time.perf_counter() - t0)
            if fatal is not None:
                raise fatal
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

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
            return {"manifests": manifests, "identity": _key(manifests), "seconds": seconds}, DATA_UNCHANGED
        return {"manifests": manifests, "identity": _key(manifests), "seconds": seconds}, ""

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
        overrides = merge(overrides, _explicit_indexes(to_dict(cfg)))
        cfg, _ = resolve_config(method, p["preset"], overrides)
        planned = comparable_config(to_dict(cfg))
        # found by `bench run --upstream NAME` (seed 0); seed k's runs sit beside it
        out_dir = self.runs / p["method"] / f"reproduce-{self.profile}{seed_suffix(int(p.get('seed', 0)))}"
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
        from .run import RunRequest, run

        p = stage.params
        up = p["upstream"]
        run_stage = p.get("checkpoint_of", f"pretrain-{up}")
        options = dict(p.get("upstream_options", {}))
        if p.get("like_of"):
            options["like"] = self.results[p["like_of"]].outputs["checkpoint"]
        req = RunRequest(upstream=up, task=p["task"], protocol=p["protocol"],
                         ckpt=self.results[run_stage].outputs["checkpoint"] if run_stage in self.results else None,
                         upstream_options=options, seed=int(p.get("seed", 0)),
                         profile=self.profile, data_root=self.data_root, results=str(self.out),
                         lrs=p.get("lrs"), folds=p.get("folds"), precision=p.get("precision", "fp32"),
                         cache_root=self.cache_root, progress=self.progress)
        record, path = run(req, log=lambda m: self.log(f"[{stage.name}] {m}"))
        outputs = {"record": str(Path(path).relative_to(self.out)), "score": record.score, "metric": record.metric,
                   "checkpoint_sha256": None, "identity": _key([record.score, record.metric]),
                   "seconds": record.wall_time_s}
        if up in PRETRAINED and f"pretrain-{up}" not in self.results:  # quickstart: the latest finished run
            outputs["upstream_checkpoint"] = record.checkpoint
        return outputs, ""


# Rough minutes per evaluation on mini (2 CPU cores, one job), used only to start long stages first.
STAGE_MINUTES = {("icbhi", "finetune"): 13, ("asr", "weighted"): 8, ("pr", "weighted"): 8, ("esc50", "finetune"): 5,
                 ("icbhi", "weighted"): 3, ("speech_commands", "weighted"): 3, ("qbe", "dtw"): 1.5,
                 ("esc50", "weighted"): 1,
                 # mlp: 8 HEAR grid points x folds on cached features (fbank / random mini, one thread, no extraction);
                 # knn takes under a second once the features are cached, so it keeps the 0.5 default
                 ("speech_commands", "mlp"): 6, ("esc50", "mlp"): 2.5, ("icbhi", "mlp"): 0.7}


def _priority(stage: Stage) -> float:
    if stage.kind == "pretrain":
        return float("inf")
    return STAGE_MINUTES.get((stage.params.get("task"), stage.params.get("protocol")), 0.5)


def _resource(stage: Stage) -> tuple[str, str] | None:
    """The feature cache an evaluation fills: its upstream's features of its task's dataset (fine-tuning reads
    waveforms, so it fills none)."""
    if stage.kind != "eval" or stage.params.get("protocol") == "finetune":
        return None
    p = stage.params
    return p["upstream"], p.get("checkpoint_of") or p.get("like_of") or "", TASK_DATASET[p["task"]]


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_stage_in_worker(spec: dict, stage: Stage, needs: dict, forced: bool) -> tuple[dict, str]:
    """One stage in a worker process; the parent writes the done-marker from what this returns."""
    rep = Reproduction(**spec, log=lambda m: print(m, file=sys.stderr, flush=True))
    rep.results.update(needs)
    return getattr(rep, f"_run_{stage.kind}")(stage, forced)


def _last_log_line(path: Path) -> dict:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min {s % 60:02d} s" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def render(rep: Reproduction, stages: list[Stage], command: str, invocation_seconds: float,
           left_out: list[str] = ()) -> dict[str, Path]:
    """Leaderboard CSV, per-task CSVs, heatmap, per-task bars and the report, from this run's records."""
    import pandas as pd

    from .leaderboard import leaderboard, pool_seeds, write_csv
    from .plots import heatmap, task_bars
    from .records import git_commit
    from .report import render_report

    out = rep.out
    # only the records this reproduction's stages point at (re-runs leave older records behind)
    wanted = {(out / r.outputs["record"]).resolve() for r in rep.results.values() if r.outputs.get("record")}
    df = leaderboard(out)
    if not df.empty:
        df = df[[Path(p).resolve() in wanted for p in df["record"]]].reset_index(drop=True)
    written: dict[str, Path] = {}
    if df.empty:
        raise UserError(f"no evaluation finished under {out}; see the stage log above")
    df = pool_seeds(df)  # one row per upstream x task x protocol: the seeds' checkpoints and heads together
    df = df.assign(record=[";".join(str(Path(p).resolve().relative_to(out)) for p in str(r).split(";"))
                           for r in df["record"]])
    written["leaderboard.csv"] = write_csv(df, out / "leaderboard.csv")
    written["leaderboard.png"] = heatmap(df, out / "leaderboard.png", title=f"bench reproduce ({rep.profile})")
    for task, sub in df.groupby("task"):
        written[f"tasks/{task}.csv"] = write_csv(sub, out / "tasks" / f"{task}.csv")
        written[f"plots/{task}.png"] = task_bars(df, task, out / "plots" / f"{task}.png")
    results = [rep.results[s.name] for s in stages if s.name in rep.results]
    total = sum(r.seconds for r in results)
    meta = {
        "command": command,
        "git_commit": git_commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {_device_name()}, Python {platform.python_version()}",
        "wall_time": _wall_time(out, total, invocation_seconds),
        "profile": rep.profile,
        "manifests": ", ".join(f"{k} {v[:12]}" for k, v in
                               rep.results.get("data", StageResult("data", "", 0, {})).outputs.get("manifests", {}).items()),
        "stages": [{"name": r.name, "status": r.status, "seconds": r.seconds, "note": _stage_note(r)} for r in results],
        "notes": _notes(rep, left_out) + _commit_note(df["git_commit"]),
    }
    written["report.md"] = Path(atomic_write_text(out / "report.md", render_report(df, meta)))
    from .html_report import write_html  # the same tables and claims as one static page, with the records
    from .records import read_records
    written["index.html"] = write_html(df, read_records(out), out, title=f"bench reproduce ({rep.profile})")
    pd.DataFrame([{"stage": r.name, "status": r.status, "seconds": round(r.seconds, 1), "note": _stage_note(r)}
                  for r in results]).to_csv(out / "stages.csv", index=False)
    written["stages.csv"] = out / "stages.csv"
    return written


def log_invocation(out: Path, command: str, seconds: float, jobs: int, results: list[StageResult]) -> None:
    """Append this invocation's elapsed time, so a re-render (or a resumed run) still knows the real wall
    time; stage times alone overstate it when stages ran side by side (`--jobs`)."""
    ran = [r.name for r in results if r.status in ("done", "failed") and r.note != DATA_UNCHANGED]
    if not ran:
        return
    from .records import git_commit

    entry = {"command": command, "seconds": round(seconds, 1), "jobs": jobs, "stages_run": len(ran),
             "git_commit": git_commit(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / INVOCATIONS, "a") as fh:  # one short write per line: a crash leaves whole lines
        fh.write(dumps_strict(entry, indent=None) + "\n")


def _read_invocations(out: Path) -> list[dict]:
    try:
        lines = (out / INVOCATIONS).read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash
    return entries


def _wall_time(out: Path, summed: float, invocation_seconds: float) -> str:
    entries = _read_invocations(out)
    if not entries:
        return f"{_fmt_seconds(summed)} summed over stages (this invocation: {_fmt_seconds(invocation_seconds)})"
    elapsed = sum(float(e.get("seconds", 0.0)) for e in entries)
    jobs = sorted({int(e.get("jobs", 1)) for e in entries})
    n = len(entries)
    return (f"{_fmt_seconds(elapsed)} elapsed over the {n} invocation{'s' * (n > 1)} that ran stages into this "
            f"directory (--jobs {'/'.join(map(str, jobs))}; `{INVOCATIONS}`); stage times summed: {_fmt_seconds(summed)}")


def _commit_note(commits) -> list[str]:
    """Name the code versions behind the tables when a resumed reproduction spans several commits."""
    counts = Counter(str(c or "unknown")[:12] for c in commits)
    if len(counts) < 2:
        return []
    parts = ", ".join(f"{c} ({n})" for c, n in counts.most_common())
    return [f"The records come from {len(counts)} code versions (commit: records): {parts}. A finished stage is "
            "not re-run when the code changes (use `--force`); each record names its commit and settings."]


def _stage_note(r: StageResult) -> str:
    parts = [r.note] if r.note else []
    o = r.outputs
    if "step" in o:
        parts.append(f"{o['step']}/{o['total_steps']} steps, final loss {o.get('final_loss'):.4f}"
                     if o.get("final_loss") is not None else f"{o['step']}/{o['total_steps']} steps")
    if "score" in o:
        parts.append(f"{o['metric']} {o['score']:.4g}")
    return "; ".join(parts)


def _notes(rep: Reproduction, left_out: list[str] = ()) -> list[str]:
    notes = [
        "Pretraining and evaluation ran on CPU; times are wall-clock seconds of each stage when it ran "
        "(a stage skipped on a later invocation keeps the time of the run that produced it).",
        "Fine-tuning (`finetune`) on the mini-benchmark uses one learning rate (3e-3 for the head, x0.1 for the "
        "upstream), 3 epochs, bf16 autocast and, for ESC-50, fold 1 only, to fit the CPU budget; frozen protocols sweep the default grid "
        "and ESC-50 frozen scores are the mean over its 5 folds (error bars: std over folds).",
        "`fbank` has no weights, so it has no fine-tuning row.",
        "Pretraining is shortened from the `mini` presets to fit 3 seeds into the CPU budget: m2d 200 steps (preset "
        "1200), m2dx 75 (600), score 50 (300), warm-up 10 % of each; everything else is the preset.",
    ]
    if left_out:
        notes.append(f"This invocation was restricted (--upstreams/--tasks/--protocols); not part of it, so not "
                     f"in the tables: {', '.join(left_out)}.")
    failed = [r for r in rep.results.values() if r.status == "failed"]
    notes += [f"Stage {r.name} failed: {r.note}" for r in failed]
    unfinished = [r.name for r in rep.results.values() if r.status == "not run"]
    if unfinished:
        notes.append(f"Rendered with --render-only: {len(unfinished)} planned stage(s) have no finished output yet and "
                     f"are missing from the tables: {', '.join(unfinished)}. `bench reproduce` (same options) runs them.")
    return notes


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"


def reproduce(profile: str = "mini", out: str | Path | None = None, runs: str | None = None,
              data_root: str | None = None, cache_root: str | None = None,
              upstreams: tuple[str, ...] = UPSTREAMS, tasks: tuple[str, ...] | None = None,
              protocols: tuple[str, ...] | None = None, force: tuple[str, ...] = (), dry_run: bool = False,
              progress: bool = False, quick: bool = False, command: str | None = None, render_only: bool = False,
              jobs: int = 1, seeds: int = 1, log: Callable[[str], None] = print) -> dict[str, Path]:
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: give 1 or more (stages run at once; one per CPU core at most pays)")
    stages = plan(profile, upstreams, tasks, protocols, quick=quick, seeds=seeds)
    rep = Reproduction(out or Path("results") / profile, profile, runs, data_root, cache_root, force, log, progress)
    if dry_run:
        for s in stages:
            m = rep.read_marker(s)
            log(f"{s.name:40} {'done ' + m.get('finished', '') if m else 'to run'}")
        return {}
    t0 = time.perf_counter()
    command = command or ("bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    try:
        rep.run(stages, render_only=render_only, jobs=jobs)
    finally:  # an interrupted run's time counts too: its finished stages are kept
        log_invocation(rep.out, command, time.perf_counter() - t0, jobs, list(rep.results.values()))
    planned = {s.name for s in stages}
    left_out = [] if quick else [s.name for s in plan(profile, seeds=seeds) if s.name not in planned]
    return render(rep, stages, command, time.perf_counter() - t0, left_out)
