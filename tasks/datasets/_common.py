"""Small pieces every native-layout loader shares: result lists, file checks, not-found errors."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from ..audio import non_finite_problem
from ..data.build import DatasetNotBuiltError

__all__ = ["ExampleList", "check_readable", "dataset_not_found", "resolve_path", "skip_reason"]


class ExampleList(list):
    """A list of `AudioExample` plus what loading left out and why.

    `skipped` maps a file to the reason it was skipped (only filled when the caller asked to skip
    bad audio; the reason does not repeat the file); `stats` holds loader-specific counts (OOV
    words, dropped utterances...) that a result record should carry; `sources` lists the metadata
    files read (CSV, split lists, annotations, transcripts), which with the examples' audio are
    what the dataset identity (`tasks.data.identity`) fingerprints.
    """

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.skipped: dict[str, str] = {}
        self.stats: dict = {}
        self.sources: list[Path] = []


def skip_reason(path: Path | str, exc_or_text: BaseException | str) -> str:
    """The reason recorded for a skipped file: the error message without the file's own name in front
    and without the remedy (which says to skip it)."""
    text = str(exc_or_text).removeprefix(f"{path}: ")
    head, sep, remedy = text.rpartition("; ")
    return head if sep and "--skip-bad" in remedy else text  # it was skipped: the remedy no longer applies


def check_readable(path: Path) -> str | None:
    """Why `path` cannot be used as audio, or None. Cheap: reads the header and the last frame only
    (and, for float files, which alone can hold NaN or infinity, every sample).

    Reading the last frame catches files cut short after their header was written (the header
    still claims the full length), which a header check alone misses.
    """
    try:
        with sf.SoundFile(str(path)) as fh:
            if fh.frames <= 0:
                return "contains no audio samples (empty or truncated file)"
            fh.seek(fh.frames - 1)
            if len(fh.read(1)) != 1:
                return "truncated: fewer samples than its header declares"
            return non_finite_problem(fh)
    except Exception as exc:  # libsndfile raises several types for broken files
        return f"not a readable audio file ({exc})"


def dataset_not_found(
    name: str, path: Path | str | None, expected: str, profile: str | None = None
) -> DatasetNotBuiltError:
    where = f"at {path}" if path is not None else "(no path given)"
    prof = profile or "mini"
    return DatasetNotBuiltError(
        f"{name} dataset not found {where}: expected {expected}. Run `bench data build --profile {prof} --only {name}` "
        f"to build the offline version, or pass `--dataset PATH` pointing at the real corpus"
    )


def resolve_path(name: str, path: str | Path | None, profile: str | None, data_root: str | Path | None) -> Path | None:
    """`path` if given, else where `bench data build --profile P` puts dataset `name`."""
    if path is not None:
        return Path(path)
    if profile is None:
        return None
    from ..data.build import dataset_dir

    return dataset_dir(name, profile, data_root)
