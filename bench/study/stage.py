"""A stage of a study: what it is, what it needs, what it asks of a machine, and how it ended.

A stage is pure data (picklable, hashable parameters), so any executor can ship it to a worker; the
parent alone turns a worker's outputs into a `StageResult` and a done-marker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.registry import get_task

__all__ = ["Stage", "StageResult", "Resources", "seed_suffix", "resources_of", "priority", "feature_cache_of",
           "STAGE_MINUTES", "DATA_UNCHANGED"]

DATA_UNCHANGED = "data unchanged since the last run"  # the data stage's note when it only checked manifests


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str  # data | pretrain | eval
    params: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()


def seed_suffix(seed: int) -> str:
    """Stage and run-folder suffix of a seed: "" for seed 0 (so one-seed studies keep their names)."""
    return "" if seed == 0 else f"-seed{seed}"


@dataclass
class StageResult:
    name: str
    status: str  # done | skipped | failed | not run
    seconds: float
    outputs: dict
    note: str = ""


@dataclass(frozen=True)
class Resources:
    """What one stage asks of a worker: CPU cores (its torch threads) and GPUs (a fraction is a shared GPU)."""

    cpus: int = 1
    gpus: float = 0.0

    def text(self) -> str:
        return f"{self.cpus} cpu" + (f", {self.gpus:g} gpu" if self.gpus else "")


# By kind: pretraining takes whole GPUs (`gpus` of them on one node under torchrun semantics); fine-tuning
# trains a whole upstream, so it takes a GPU too; frozen heads, CTC heads and DTW on cached features are
# light enough that two share one GPU. The data stage runs in the parent (it writes the shared corpora).
RESOURCES = {"data": Resources(1, 0.0), "pretrain": Resources(1, 1.0), "finetune": Resources(1, 1.0),
             "eval": Resources(1, 0.5)}


def resources_of(stage: Stage, pretrain_gpus: int = 1) -> Resources:
    """The resources `stage` asks for; `pretrain_gpus` > 1 gives pretraining several GPUs of one node."""
    if stage.kind == "pretrain":
        return Resources(RESOURCES["pretrain"].cpus, float(max(1, pretrain_gpus)))
    if stage.kind == "eval" and stage.params.get("protocol") == "finetune":
        return RESOURCES["finetune"]
    return RESOURCES.get(stage.kind, Resources())


# Rough minutes per evaluation on mini (2 CPU cores, one job), used only to start long stages first.
STAGE_MINUTES = {("icbhi", "finetune"): 13, ("asr", "weighted"): 8, ("pr", "weighted"): 8, ("esc50", "finetune"): 5,
                 ("icbhi", "weighted"): 3, ("speech_commands", "weighted"): 3, ("qbe", "dtw"): 1.5,
                 ("esc50", "weighted"): 1,
                 # mlp: 8 HEAR grid points x folds on cached features (fbank / random mini, one thread, no extraction);
                 # knn takes under a second once the features are cached, so it keeps the 0.5 default
                 ("speech_commands", "mlp"): 6, ("esc50", "mlp"): 2.5, ("icbhi", "mlp"): 0.7}


def priority(stage: Stage) -> float:
    if stage.kind == "pretrain":
        return float("inf")
    return STAGE_MINUTES.get((stage.params.get("task"), stage.params.get("protocol")), 0.5)


def feature_cache_of(stage: Stage) -> tuple | None:
    """The feature cache an evaluation fills: its upstream's features of its task's dataset (fine-tuning reads
    waveforms, so it fills none). Two stages with the same cache never run at once: the second reads the first's."""
    if stage.kind != "eval" or stage.params.get("protocol") == "finetune":
        return None
    p = stage.params
    return (p["upstream"], p.get("ckpt") or p.get("checkpoint_of") or p.get("like_of") or "",
            repr(sorted(p.get("upstream_options", {}).items())), p.get("dataset") or get_task(p["task"]).dataset)
