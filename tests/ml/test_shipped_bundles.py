"""The shipped bundles in models/: they load, verify, and hold measured metrics (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.bundle import discover_bundles, load_bundle, read_manifest
from ml.evaluation.metrics import HEADLINE

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

MODELS = ROOT / "models"
BUNDLES = discover_bundles(MODELS)
DATASET = ROOT / "var" / "dataset"


def test_models_folder_is_compact():
    total = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file())
    assert total < 150 * 2**20


@pytest.mark.skipif(not BUNDLES, reason="no trained bundles in models/ yet (make train)")
@pytest.mark.parametrize("path", BUNDLES, ids=[p.name for p in BUNDLES])
def test_bundle_loads_with_measured_metrics(path):
    bundle = load_bundle(path)
    m = bundle.manifest
    assert m["training"]["epochs_run"] > 0
    for key in HEADLINE[m["task"]]:
        assert m["metrics"].get(key) is not None, key
    assert m["metrics"]["split"] == "test"
    assert m["label_provenance"]["research_use_only"] is True
    assert (path / "README.md").is_file() and (path / "REPORT.md").is_file()


@pytest.mark.skipif(not BUNDLES, reason="no trained bundles in models/ yet (make train)")
def test_one_default_per_task():
    defaults = [read_manifest(p) for p in BUNDLES if read_manifest(p).get("default")]
    tasks = [m["task"] for m in defaults]
    assert sorted(tasks) == sorted(set(tasks))


@pytest.mark.skipif(
    not BUNDLES or not (DATASET / "annotations" / "dataset.csv").is_file(),
    reason="needs trained bundles and the prepared dataset in var/dataset",
)
@pytest.mark.parametrize("path", BUNDLES, ids=[p.name for p in BUNDLES])
def test_evaluate_reproduces_manifest(path):
    from ml.data.dataset import read_rows
    from ml.evaluation.evaluate import evaluate_bundle

    m = read_manifest(path)
    if read_rows(DATASET)[1] != m["metrics"].get("dataset_hash"):
        pytest.skip("var/dataset is not the dataset this bundle was evaluated on")
    block = evaluate_bundle(path, DATASET, write=False)
    for key in HEADLINE[m["task"]]:
        assert block[key] == pytest.approx(m["metrics"][key], abs=1e-4), key
