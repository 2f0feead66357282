"""The parent of a study: decides what runs, hands stages to an executor, writes every done-marker.

Resuming (the hear-eval-kit idea of done-markers, with hashes): every finished stage gets
`<out>/stages/<stage>.json` holding its key (`bench.study.keys`) and its outputs. A stage is skipped
when its marker's key equals the newly computed key and its outputs still exist (checkpoints are
re-hashed). Only this process writes markers, whichever executor computed the stage, so a study
started on Ray resumes with `local` (or Slurm) and skips what is done, and the other way round.
Source-code changes do not invalidate stages by themselves: `--force` names the stages to redo.
"""

from __future__ import annotations

import concurrent.futures as cf
import time

from upstreams.fileio import atomic_write_json, sha256_file

from ..errors import UserError
from .executors import Executor, Submission
from .keys import key_of
from .stage import Stage, StageResult, feature_cache_of, priority
from .work import StageWork

__all__ = ["Study"]


class Study(StageWork):
    """Runs a plan under `out` (results) and `runs` (pretraining checkpoints), with done-markers."""

    # -- markers -------------------------------------------------------------------------------
    def marker_path(self, stage: Stage):
        return self.out / "stages" / f"{stage.name}.json"

    def stage_key(self, stage: Stage) -> str:
        inputs = {n: self.results[n].outputs.get("identity") for n in stage.needs}
        return key_of({"stage": stage.name, "params": stage.params, "inputs": inputs})

    def _outputs_intact(self, outputs: dict, need_checkpoint: bool = True) -> bool:
        """`need_checkpoint=False` (rendering only): the committed record is the output that matters; the
        checkpoint that produced it lives under `runs/`, which a fresh checkout does not have."""
        from pathlib import Path

        ckpt = outputs.get("checkpoint")
        if need_checkpoint and ckpt and (not Path(ckpt).is_file()
                                         or sha256_file(ckpt) != outputs.get("checkpoint_sha256")):
            return False
        rec = outputs.get("record")
        return not rec or (self.out / rec).is_file()

    # -- running -------------------------------------------------------------------------------
    def run(self, stages: list[Stage], render_only: bool = False,
            executor: Executor | None = None) -> list[StageResult]:
        """Run (or skip) every stage; with `render_only`, run nothing and mark unfinished stages "not run".

        Without an executor stages run here, one at a time; with one, see `_run_scheduled`."""
        names = {s.name for s in stages}
        unknown = self.force - names - {"all"}
        if unknown:
            raise UserError(f"--force: no stage named {', '.join(sorted(unknown))}; "
                            f"stages: {', '.join(s.name for s in stages)}")
        if executor is not None and not render_only:
            self._run_scheduled(stages, executor)
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
        from ..results.records import portable_paths

        self.log(f"[reproduce] {stage.name}: done in {seconds:.0f} s" + (f" ({note})" if note else ""))
        old = self.read_marker(stage)
        if old and old.get("key") == key and old.get("outputs") == portable_paths(outputs):
            return  # a stage that only confirmed its outputs (the data check) leaves its marker as it was
        atomic_write_json(self.marker_path(stage), {"stage": stage.name, "key": key, "params": stage.params,
                                                    "outputs": portable_paths(outputs), "seconds": round(seconds, 2),
                                                    "note": note, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def _run_scheduled(self, stages: list[Stage], executor: Executor) -> None:
        """Run stages on `executor`, at most `executor.slots` at a time.

        With `--executor local --jobs N` (worker processes with cores // N threads each): most of the
        mini study is single-threaded work (frozen heads, CTC heads, DTW, fine-tuning with one
        thread), so one job leaves a core idle most of the time. A stage starts once its needs are
        settled; among ready stages pretraining goes first (it unblocks the most), then the longest
        expected (`STAGE_MINUTES`), so that no long stage is left for the end. Two stages that would
        extract the same upstream's features of the same dataset never run together: the second reads
        the first's cache instead of computing it again. Data stages run here, in this process. A
        failed pretraining stops new stages from starting, lets the running ones finish, then raises.
        The stages that become launchable together are submitted together (one Slurm array job).
        """
        spec = {"out": str(self.out), "profile": self.profile, "runs": str(self.runs), "data_root": self.data_root,
                "cache_root": self.cache_root, "progress": self.progress}
        waiting = list(stages)
        ready: list[tuple[Stage, str]] = []
        running: dict[cf.Future, tuple[Stage, str, float]] = {}
        fatal: BaseException | None = None
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
                busy = {feature_cache_of(s) for s, _, _ in running.values()} - {None}
                launch = []
                for stage, key in sorted(ready, key=lambda sk: -priority(sk[0])):
                    if fatal is not None or len(running) + len(launch) >= executor.slots:
                        break
                    if feature_cache_of(stage) in busy:
                        continue
                    ready.remove((stage, key))
                    busy.add(feature_cache_of(stage))
                    self.log(f"[reproduce] {stage.name}: running ({executor.placement(stage)})")
                    launch.append((stage, key))
                futures = executor.submit_all([Submission(spec, s, {n: self.results[n] for n in s.needs},
                                                          self._forced(s)) for s, _ in launch]) if launch else []
                for (stage, key), fut in zip(launch, futures):
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
            executor.close(cancel=True)
            raise
        executor.close()
