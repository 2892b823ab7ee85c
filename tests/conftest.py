"""Shared fixtures. Real data lives in ../shared/data; tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPONDYSCAN_SHARED_DATA", ROOT.parent / "shared" / "data"))

requires_shared = pytest.mark.skipif(
    not (SHARED_DATA / "lumbar_mri" / "slices.csv").exists(),
    reason=f"real data not found at {SHARED_DATA} (a fresh clone has no ../shared; "
    "set SPONDYSCAN_SHARED_DATA to point at it)",
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "lumbar_mri" / "slices.csv").exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
