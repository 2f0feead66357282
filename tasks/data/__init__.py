"""The offline mini-benchmark: builders that write real-layout datasets, and where they live."""

from .build import (
    PROFILES,
    BuildContext,
    DatasetBuilder,
    DatasetError,
    DatasetNotBuiltError,
    build,
    builders,
    dataset_dir,
    info,
    manifest_hash,
    read_manifest,
    register_builder,
)
from .paths import data_root, profile_root

__all__ = [
    "PROFILES",
    "BuildContext",
    "DatasetBuilder",
    "DatasetError",
    "DatasetNotBuiltError",
    "build",
    "builders",
    "dataset_dir",
    "info",
    "manifest_hash",
    "read_manifest",
    "register_builder",
    "data_root",
    "profile_root",
]
