"""The clip-level tasks as evaluation problems: examples, labels, folds, metric.

Each builder turns a loader's examples into a `ClipTask` with explicit train / validation / test
indices per fold. Validation is always carved from training material, never from the test fold:
- ESC-50: test fold k, validation fold k+1 (mod 5), training the other three. Clips of one
  source recording share a fold, so no recording straddles train and validation either.
- Speech Commands: the official `validation_list.txt` / `testing_list.txt` (SUPERB 12 classes by
  default, 35 with `classes="all35"`); class-balanced sampling for training (`_unknown_` and
  `_silence_` are otherwise over- and under-represented).
- ICBHI: the official patient-wise train/test split; validation = 20 % of the *training patients*
  (seeded, fixed across upstreams so every model is selected on the same patients). The ICBHI
  literature often selected the epoch on the test set; records say that this suite did not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .data.build import DatasetError, manifest_hash
from .data.identity import DatasetIdentity, identify, manifest_dir
from .datasets.base import AudioExample
from .metrics.classification import accuracy, icbhi_scores

__all__ = ["Fold", "ClipTask", "CLIP_TASKS", "load_clip_task", "dataset_identity", "read_identity"]


@dataclass
class Fold:
    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


@dataclass
class ClipTask:
    name: str
    examples: list[AudioExample]
    classes: list[str]
    labels: np.ndarray
    folds: list[Fold]
    metric: str
    score_fn: Callable[[np.ndarray, np.ndarray], dict]
    dataset_dir: Path
    clip_seconds: float | None = None
    pad_mode: str = "repeat"
    balanced_sampling: bool = False
    skipped: dict = field(default_factory=dict)  # unreadable file -> reason (skip_bad)
    notes: dict = field(default_factory=dict)
    identity: DatasetIdentity | None = None  # content fingerprint of exactly the files read (tasks.data.identity)


def dataset_identity(top: Path) -> tuple[Path, str]:
    """(directory, manifest hash) of a dataset: the built dataset's folder with its MANIFEST.json, or the
    corpus itself. Only the manifest or a file listing: runs use `read_identity`, which hashes content."""
    d, _manifest = manifest_dir(Path(top))
    return d, manifest_hash(d)


def read_identity(top: Path, *example_lists) -> DatasetIdentity:
    """The identity of what was read from the dataset at `top`: the metadata files (`ExampleList.sources`)
    and the audio of every example of `example_lists`, verified against MANIFEST.json when there is one."""
    files: dict[str, Path] = {}
    for examples in example_lists:
        for f in [*getattr(examples, "sources", []), *(e.path for e in examples)]:
            files.setdefault(str(f), Path(f))
    return identify(top, files.values())


def _labels(examples: list[AudioExample], classes: list[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[e.label] for e in examples], dtype=np.int64)


def _top_of(examples: list[AudioExample], levels: int) -> Path:
    if not examples:
        skipped = len(getattr(examples, "skipped", {}))
        raise DatasetError("the dataset has no usable examples" + (f" ({skipped} bad file(s) skipped)" if skipped else ""))
    return examples[0].path.parents[levels]


def esc50_task(path=None, *, profile="mini", root=None, skip_bad=False, **_) -> ClipTask:
    from .datasets.esc50 import load_esc50

    examples = load_esc50(path, profile=profile, root=root, skip_bad=skip_bad)
    classes = [c for _, c in sorted({(e.meta["target"], e.label) for e in examples})]  # in ESC-50 target order
    top = _top_of(examples, 1)  # ESC-50-master/audio/x.wav
    folds_present = sorted({e.meta["fold"] for e in examples})
    if len(folds_present) < 3:
        skipped = f" after skipping {len(examples.skipped)} bad file(s)" if examples.skipped else ""
        raise DatasetError(f"{top}: ESC-50 needs clips in at least 3 folds (train/validation/test), found "
                           f"{len(folds_present)} ({', '.join(map(str, folds_present))}){skipped}; repair or restore "
                           f"the bad clips")
    fold_of = np.array([e.meta["fold"] for e in examples])
    folds = []
    for i, k in enumerate(folds_present):
        v = folds_present[(i + 1) % len(folds_present)]
        folds.append(Fold(f"fold{k}", np.flatnonzero((fold_of != k) & (fold_of != v)),
                          np.flatnonzero(fold_of == v), np.flatnonzero(fold_of == k)))
    ident = read_identity(top, examples)
    return ClipTask("esc50", list(examples), classes, _labels(examples, classes), folds, "accuracy",
                    accuracy, ident.directory, skipped=examples.skipped, identity=ident,
                    notes={"validation": "the fold after the test fold (mod 5); training = the other three"})


def speech_commands_task(path=None, *, profile="mini", root=None, skip_bad=False, classes="superb12", **_) -> ClipTask:
    from .datasets.speech_commands import find_root, load_speech_commands

    views = {"superb12": "12", "all35": "35"}
    if classes not in views:
        raise ValueError(f"speech_commands classes must be one of {', '.join(views)}, got {classes!r}")
    splits = {s: load_speech_commands(path, s, views[classes], profile=profile, data_root=root, skip_bad_audio=skip_bad)
              for s in ("train", "validation", "test")}
    examples = splits["train"] + splits["validation"] + splits["test"]
    names = sorted({e.label for e in examples})
    n_tr, n_va = len(splits["train"]), len(splits["validation"])
    idx = np.arange(len(examples))
    fold = Fold("official", idx[:n_tr], idx[n_tr : n_tr + n_va], idx[n_tr + n_va :])
    skipped = {k: v for s in splits.values() for k, v in s.skipped.items()}
    top = find_root(path, profile, root)
    if not examples:
        raise DatasetError(f"{top}: no usable clips" + (f" ({len(skipped)} bad file(s) skipped)" if skipped else ""))
    ident = read_identity(top, *splits.values())
    return ClipTask("speech_commands", examples, names, _labels(examples, names), [fold], "accuracy", accuracy,
                    ident.directory, clip_seconds=1.0, pad_mode="zero", balanced_sampling=True,
                    skipped=skipped, identity=ident,
                    notes={"classes": classes, "validation": "official validation_list.txt",
                           "sampling": "class-balanced (inverse class frequency) during training",
                           "unknown_kept": {s: splits[s].stats.get("unknown_kept", "all") for s in ("validation", "test")}})


ICBHI_CLASSES = ["normal", "crackle", "wheeze", "both"]


def _carve_patients(examples: list[AudioExample], train_idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    patients = sorted({examples[i].meta["patient"] for i in train_idx})
    rng = np.random.default_rng(seed)
    for _attempt in range(100):  # need normal and abnormal cycles on both sides
        chosen = set(rng.choice(patients, size=max(1, round(fraction * len(patients))), replace=False).tolist())
        is_val = np.array([examples[i].meta["patient"] in chosen for i in train_idx])
        lab = np.array([examples[i].label != "normal" for i in train_idx])
        if lab[is_val].any() and (~lab[is_val]).any() and lab[~is_val].any() and (~lab[~is_val]).any():
            return train_idx[~is_val], train_idx[is_val]
    raise DatasetError("ICBHI: could not carve validation patients with both normal and abnormal cycles from the "
                       f"{len(patients)} training patient(s); the corpus (after any skipped files) is too small")


def icbhi_task(path=None, *, profile="mini", root=None, skip_bad=False, clip_seconds: float = 8.0,
               valid_fraction: float = 0.2, split_seed: int = 0, **_) -> ClipTask:
    from .datasets.icbhi import load_icbhi

    examples = load_icbhi(path, profile=profile, root=root, skip_bad=skip_bad)
    top = _top_of(examples, 0)  # ICBHI_final_database/x.wav
    split = np.array([e.meta["split"] for e in examples])
    train_all, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    if not len(train_all) or not len(test):
        raise DatasetError(f"{top}: ICBHI needs cycles of both official splits, found {len(train_all)} train and "
                           f"{len(test)} test cycle(s)")
    train, valid = _carve_patients(examples, train_all, valid_fraction, split_seed)
    ident = read_identity(top, examples)
    return ClipTask(
        "icbhi", list(examples), ICBHI_CLASSES, _labels(examples, ICBHI_CLASSES), [Fold("official", train, valid, test)],
        "icbhi_score", lambda y, p: icbhi_scores(y, p, normal=0), ident.directory,
        clip_seconds=clip_seconds, pad_mode="repeat", skipped=examples.skipped, identity=ident,
        notes={"validation": f"{valid_fraction:.0%} of the official training patients (seed {split_seed}); "
                             "model selection never used the test split, unlike much of the ICBHI literature",
               "cycle_seconds": clip_seconds, "padding": "repeat"},
    )


CLIP_TASKS: dict[str, Callable[..., ClipTask]] = {
    "esc50": esc50_task,
    "speech_commands": speech_commands_task,
    "icbhi": icbhi_task,
}


def load_clip_task(name: str, path=None, **options) -> ClipTask:
    if name not in CLIP_TASKS:
        raise KeyError(f"'{name}' is not a clip task; choose one of {', '.join(CLIP_TASKS)}")
    return CLIP_TASKS[name](path, **options)
