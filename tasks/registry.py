"""The six tasks: what each scores, with which protocols, on which dataset.

A spec names its family; `bench.protocols` maps the family to the code that runs it; this table is what `bench list tasks` shows
and what the harness validates `--task/--protocol` against before loading anything.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskSpec", "TASKS", "get_task"]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    dataset: str  # builder name in tasks.data, also the `--dataset` layout
    metric: str
    higher_is_better: bool
    protocols: tuple[str, ...]
    default_protocol: str
    family: str  # which runner evaluates it: the key of `bench.protocols.FAMILIES` (clip, ctc, qbe)


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("asr", "speech recognition, LibriSpeech layout, SUPERB BiLSTM-CTC head over characters",
                 "librispeech", "wer", False, ("weighted", "linear", "finetune"), "weighted", "ctc"),
        TaskSpec("pr", "phoneme recognition, 39 ARPAbet phones, SUPERB linear CTC head",
                 "librispeech", "per", False, ("weighted", "linear", "finetune"), "weighted", "ctc"),
        TaskSpec("qbe", "query-by-example spoken term detection, QUESST 2014 layout, subsequence DTW",
                 "quesst14", "mtwv", True, ("dtw",), "dtw", "qbe"),
        TaskSpec("esc50", "environmental sound classification, ESC-50 layout, 5-fold cross-validation",
                 "esc50", "accuracy", True, ("linear", "weighted", "finetune", "knn", "mlp"), "linear", "clip"),
        TaskSpec("speech_commands", "keyword spotting, Speech Commands v0.02, SUPERB 12 classes",
                 "speech_commands", "accuracy", True, ("linear", "weighted", "finetune", "knn", "mlp"), "linear", "clip"),
        TaskSpec("icbhi", "respiratory sound classification, ICBHI 2017 official split, score = (Se + Sp) / 2",
                 "icbhi", "icbhi_score", True, ("linear", "weighted", "finetune", "knn", "mlp"), "linear", "clip"),
    ]
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; choose one of {', '.join(TASKS)}")
    return TASKS[name]
