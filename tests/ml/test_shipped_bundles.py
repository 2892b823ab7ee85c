"""The shipped bundles in models/: they load, verify, hold measured metrics, and re-evaluating
them on the real test split (rebuilt from ../shared/data when present) gives those metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.bundle import discover_bundles, load_bundle, read_manifest
from ml.evaluation.metrics import HEADLINE

ROOT = Path(__file__).resolve().parents[2]

MODELS = ROOT / "models"
BUNDLES = discover_bundles(MODELS)
DATASET = ROOT / "var" / "dataset"


@pytest.fixture(scope="module")
def real_dataset(tmp_path_factory) -> Path:
    """The prepared real dataset: var/dataset when built, else rebuilt from ../shared/data."""
    from tests.conftest import SHARED_DATA

    if (DATASET / "annotations" / "dataset.csv").is_file():
        return DATASET
    source = SHARED_DATA / "lumbar_mri"
    if not (source / "slices.csv").is_file():
        pytest.skip(f"needs the real data at {source} (absent on a fresh clone without ../shared)")
    from ml.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("real") / "dataset"
    prepare_dataset("lumbar-mri", source, out)
    return out


def test_models_folder_is_compact():
    total = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file())
    assert total < 150 * 2**20


@pytest.mark.skipif(not BUNDLES, reason="no trained bundles in models/ yet (make train)")
@pytest.mark.parametrize("path", BUNDLES, ids=[p.name for p in BUNDLES])
def test_bundle_loads_with_measured_metrics(path):
    bundle = load_bundle(path)
    m = bundle.manifest.model_dump()
    assert m["training"]["epochs_run"] > 0
    for key in HEADLINE[m["task"]]:
        assert m["metrics"].get(key) is not None, key
    assert m["metrics"]["split"] == "test"
    assert m["label_provenance"]["research_use_only"] is True
    assert (path / "README.md").is_file() and (path / "REPORT.md").is_file()


@pytest.mark.skipif(not BUNDLES, reason="no trained bundles in models/ yet (make train)")
def test_one_default_per_task():
    defaults = [read_manifest(p) for p in BUNDLES if read_manifest(p).default]
    tasks = [m.task for m in defaults]
    assert sorted(tasks) == sorted(set(tasks))


@pytest.mark.skipif(not BUNDLES, reason="no trained bundles in models/ yet (make train)")
@pytest.mark.parametrize("path", BUNDLES, ids=[p.name for p in BUNDLES])
def test_evaluate_reproduces_manifest(path, real_dataset):
    from ml.data.dataset import read_rows
    from ml.evaluation.evaluate import evaluate_bundle

    m = read_manifest(path).model_dump()
    # prepare is deterministic, so a rebuilt dataset has the hash the bundle was evaluated on
    assert read_rows(real_dataset)[1] == m["metrics"].get("dataset_hash")
    block = evaluate_bundle(path, real_dataset, write=False)
    for key in HEADLINE[m["task"]]:
        assert block[key] == pytest.approx(m["metrics"][key], abs=1e-4), key
