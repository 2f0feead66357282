"""The one registry that decides which code evaluates a task.

A task spec (`tasks.registry.TaskSpec.family`) names its family; this table maps the family to the
runner that holds its protocols and to the training caps those protocols accept. `bench run` asks
here and knows no task names, so a new task is one `TaskSpec` line (and, for a new family, one line
below). Runners are imported only when a task of their family runs, so `bench --help` stays fast.

  clip  `bench.protocols.clip`: linear, weighted, knn, mlp on cached pooled features; finetune
  ctc   `bench.protocols.ctc`: SUPERB CTC heads (weighted, linear) and fine-tuning for PR and ASR
  qbe   `bench.protocols.qbe_dtw`: subsequence DTW per layer, nothing trained
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["Family", "FAMILIES", "family_of", "run_protocol", "UNTRAINED_PROTOCOLS"]

UNTRAINED_PROTOCOLS = {"dtw", "knn"}  # nothing is trained, so head seeds cannot change the score


@dataclass(frozen=True)
class Family:
    runner: str  # "module:function" inside bench.protocols; called as f(req, spec, protocol, upstream, device, log)
    budget_keys: tuple[str, ...]  # the caps `bench run --max-epochs/--max-steps/--patience` may set
    budget_unit: str = ""  # what the head trains by, for error messages ("epochs", "steps")


FAMILIES: dict[str, Family] = {
    "clip": Family("clip:run_clip", ("max_epochs", "patience"), "epochs"),
    "ctc": Family("ctc:run_ctc", ("max_steps", "patience"), "steps"),
    "qbe": Family("qbe_dtw:run_qbe", ()),
}


def family_of(spec) -> Family:
    try:
        return FAMILIES[spec.family]
    except KeyError:
        raise KeyError(f"task '{spec.name}' names family '{spec.family}', which bench.protocols does not know; "
                       f"choose one of {', '.join(FAMILIES)}") from None


def run_protocol(req, spec, protocol: str, upstream, device, log=print):
    """Evaluate `upstream` on `spec` with `protocol`; returns a `bench.protocols.partial.PartialResult`."""
    module, function = family_of(spec).runner.split(":")
    runner = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    return runner(req, spec, protocol, upstream, device, log)
