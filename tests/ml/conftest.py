"""Fixtures for the ml tests: a small synthetic source and the dataset prepared from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.data.prepare import prepare_dataset
from ml.data.synthetic import write_synthetic_source


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 phantom subjects x 3 slices in the lumbar_mri layout (two scanner profiles)."""
    return write_synthetic_source(
        tmp_path_factory.mktemp("synth") / "src", n_subjects=16, slices_per_subject=3, seed=0
    )


@pytest.fixture(scope="session")
def synthetic_dataset(synthetic_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset ``prepare`` makes from ``synthetic_source`` with default options."""
    out = tmp_path_factory.mktemp("synth_ds") / "dataset"
    prepare_dataset("lumbar-mri", synthetic_source, out)
    return out
