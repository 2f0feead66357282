"""What every protocol hands back to `bench.run`: a partial result, and the record's dataset field.

Kept apart from the protocols so that clip, CTC and DTW code share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.data.identity import DatasetIdentity, identify

__all__ = ["PartialResult", "dataset_record"]


@dataclass
class PartialResult:
    """What a task family hands back to `bench.run` to become a record."""

    score: float
    lr: float | None
    split: str
    secondary: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)


def dataset_record(spec, req, identity, skipped) -> dict:
    """The record's `dataset` field. `identity`: the task's `DatasetIdentity` (content fingerprint of the
    files it read; a bare folder is fingerprinted whole); `skipped` maps unreadable file -> reason."""
    ident = identity if isinstance(identity, DatasetIdentity) else identify(identity)
    skipped = list(skipped.items())
    return {
        "name": spec.dataset,
        "path": str(ident.directory),
        "profile": req.profile if req.dataset is None else "",
        **ident.record(),  # manifest_sha256, content_sha256, fingerprint
        "skipped_files": len(skipped),
        "skipped": [f"{f}: {why.removeprefix(f'{f}: ')}" for f, why in skipped[:20]],
    }
