"""The shipped bundles in models/: they load, verify, hold measured metrics, and re-evaluating
them on the real test split (rebuilt from ../shared/data when present) gives those metrics."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
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


# Bundles whose forward pass costs more than this (FLOPs per slice) re-evaluate the whole test
# split only under `make test-slow` (the design's full-size U-Nets: 86 GFLOPs a slice, over two
# minutes each on a 2-core CPU); the main suite re-evaluates one slice of every test subject.
FULL_SPLIT_FLOPS = 20e9
LIGHT = [p for p in BUNDLES if (read_manifest(p).flops or 0) <= FULL_SPLIT_FLOPS]
HEAVY = [p for p in BUNDLES if p not in LIGHT]


def _reproduces_manifest(path: Path, dataset: Path) -> None:
    from ml.data.dataset import read_rows
    from ml.evaluation.evaluate import evaluate_bundle

    m = read_manifest(path).model_dump()
    # prepare is deterministic, so a rebuilt dataset has the hash the bundle was evaluated on
    assert read_rows(dataset)[1] == m["metrics"].get("dataset_hash")
    block = evaluate_bundle(path, dataset, write=False)
    for key in HEADLINE[m["task"]]:
        assert block[key] == pytest.approx(m["metrics"][key], abs=1e-4), key


@pytest.mark.skipif(not LIGHT, reason="no trained bundles in models/ yet (make train)")
@pytest.mark.parametrize("path", LIGHT, ids=[p.name for p in LIGHT])
def test_evaluate_reproduces_manifest(path, real_dataset):
    _reproduces_manifest(path, real_dataset)


@pytest.mark.slow
@pytest.mark.skipif(not HEAVY, reason=f"no bundle above {FULL_SPLIT_FLOPS:.0e} FLOPs a slice")
@pytest.mark.parametrize("path", HEAVY, ids=[p.name for p in HEAVY])
def test_evaluate_reproduces_manifest_of_heavy_bundle(path, real_dataset):
    _reproduces_manifest(path, real_dataset)


def _per_image_rows(path: Path) -> dict[str, dict[str, str]]:
    with (path / "metrics_per_image.csv").open(newline="", encoding="utf-8") as fh:
        return {r["image_id"]: r for r in csv.DictReader(fh)}


@pytest.mark.skipif(not HEAVY, reason=f"no bundle above {FULL_SPLIT_FLOPS:.0e} FLOPs a slice")
@pytest.mark.parametrize("path", HEAVY, ids=[p.name for p in HEAVY])
def test_heavy_bundle_reproduces_one_slice_per_subject(path, real_dataset):
    """The stored per-image metrics hold the manifest's numbers, and re-predicting the first
    test slice of every subject gives that slice's stored IoU and Dice."""
    from dataclasses import replace

    from ml.bundle import load_bundle
    from ml.data.dataset import load_split
    from ml.evaluation.evaluate import evaluate_model

    m = read_manifest(path)
    assert m.task == "segmentation", "only segmenters are this heavy; extend the test otherwise"
    metrics = m.metrics.model_dump()
    stored = _per_image_rows(path)
    data = load_split(real_dataset, "test")
    assert data.dataset_hash == metrics["dataset_hash"]
    assert sorted(stored) == sorted(r["image_id"] for r in data.rows)
    assert np.mean([float(r["iou"]) for r in stored.values()]) == pytest.approx(
        metrics["iou"], abs=1e-4
    )

    first: dict[str, int] = {}
    for i, subject in enumerate(data.subject_ids):
        first.setdefault(str(subject), i)
    idx = np.array(sorted(first.values()))
    assert len(idx) >= 10  # every test subject, not a token few
    subset = replace(
        data,
        images=data.images[idx],
        masks=data.masks[idx],
        as_status=data.as_status[idx],
        stage=data.stage[idx],
        rows=[data.rows[i] for i in idx],
        sources=data.sources[idx],
        subject_ids=data.subject_ids[idx],
    )
    _, artifacts = evaluate_model(load_bundle(path).model, "segmentation", subset)
    again = list(csv.DictReader(io.StringIO(artifacts["metrics_per_image.csv"].decode())))
    assert [r["image_id"] for r in again] == [data.rows[i]["image_id"] for i in idx]
    for r in again:
        for key in ("iou", "dice"):
            assert float(r[key]) == pytest.approx(float(stored[r["image_id"]][key]), abs=1e-4), (
                r["image_id"],
                key,
            )


CROSS_VALIDATED = [
    p
    for p in BUNDLES
    if (cv := read_manifest(p).cross_validation) is not None and cv.fold_results is not None
]


@pytest.mark.skipif(not CROSS_VALIDATED, reason="no shipped bundle keeps its fold results")
@pytest.mark.parametrize("path", CROSS_VALIDATED, ids=[p.name for p in CROSS_VALIDATED])
def test_recorded_cross_validation_is_what_its_fold_files_pool_to(path):
    """The cross-validation a bundle records is recomputed from the fold files it ships: one per
    fold, made by the bundle's own config on the same deal, every slice held out exactly once,
    and the pooled value, each fold's value and each source's value are theirs."""
    import json

    from ml.training.config import load_config
    from ml.training.cv import (
        FOLD_FORMAT,
        by_source,
        fold_result_name,
        plain_config,
        pooled_metrics,
    )

    m = read_manifest(path)
    cv = m.cross_validation
    assert cv is not None and cv.fold_results is not None and m.dataset is not None
    files = [
        json.loads((path / cv.fold_results / fold_result_name(i)).read_text()) for i in range(cv.k)
    ]
    config = plain_config(load_config(m.key))  # the config the project ships for this model
    for i, f in enumerate(files):
        assert (f["format"], f["key"], f["k"], f["fold"]) == (FOLD_FORMAT, m.key, cv.k, i)
        assert f["epochs_cap"] == cv.epochs_cap and f["seed"] == files[0]["seed"]
        assert f["config"] == config
        assert f["dataset_sha256"] != m.dataset.hash  # the fold's own split, not the fixed one
        assert cv.folds[i].metrics == {
            k: round(v, 4) for k, v in pooled_metrics(f["rows"], m.task).items()
        }
    rows = [r for f in files for r in f["rows"]]
    assert len({r["image_id"] for r in rows}) == len(rows) == cv.slices
    subjects = [{r["subject_id"] for r in f["rows"]} for f in files]
    assert sum(len(s) for s in subjects) == len(set().union(*subjects)) == cv.subjects
    for name, value in pooled_metrics(rows, m.task).items():
        assert cv.metrics[name].pooled == round(value, 4)
        assert cv.metrics[name].ci95[0] <= cv.metrics[name].pooled <= cv.metrics[name].ci95[1]
    assert cv.by_source == by_source(rows, m.task)
