"""Shared fixtures. The tiny data profile is built once per machine and reused (builds skip when current)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _test_data_root() -> Path:
    return Path(os.environ.get("BENCH_TEST_DATA", REPO / ".cache" / "test-data"))


@pytest.fixture(scope="session")
def tiny_root() -> Path:
    """Data root holding the built `tiny` profile (`<root>/tiny/<dataset>`)."""
    from tasks.data import build

    root = _test_data_root()
    build("tiny", root=root, log=lambda _msg: None)
    return root
