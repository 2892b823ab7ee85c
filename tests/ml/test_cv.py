"""Cross-validation: subject-grouped, source-stratified folds; pooled held-out predictions with
subject-bootstrap intervals; a real (tiny) training run per fold."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ml.training.cv import pooled_metrics, subject_bootstrap, subject_folds, write_fold_dataset

HERE = Path(__file__).parent


def test_folds_group_subjects_and_spread_each_source():
    subjects = np.array([f"{s}-{i}" for s in ("a", "b") for i in range(10) for _ in range(3)])
    sources = np.array([s.split("-")[0] for s in subjects])
    folds = subject_folds(subjects, sources, 5, seed=1)
    assert set(folds) == set(subjects.tolist())  # every subject once (all its slices together)
    for src in ("a", "b"):
        per_fold = [
            sum(1 for s, f in folds.items() if s.startswith(src) and f == k) for k in range(5)
        ]
        assert per_fold == [2] * 5
    assert subject_folds(subjects, sources, 5, seed=1) == folds  # deterministic
    with pytest.raises(ValueError, match="at least 2"):
        subject_folds(subjects, sources, 1)


def test_pooled_metrics_and_subject_intervals():
    rows = []
    for sid in range(10):
        for j in range(3):
            right = sid < 8  # two subjects always wrong
            rows.append({
                "subject_id": f"s{sid}", "as_status": 1, "pred_as_status": 1 if right else 0,
                "stage": j % 4, "pred_stage": j % 4 if right else 0,
            })  # fmt: skip
    m = pooled_metrics(rows, "classification")
    assert m["binary_accuracy"] == pytest.approx(0.8)
    ci = subject_bootstrap(rows, "classification", n_boot=300)
    lo, hi = ci["binary_accuracy"]
    assert lo < 0.8 < hi and hi <= 1.0
    seg = [
        {"subject_id": "a", "iou": 0.5, "dice": 0.6},
        {"subject_id": "b", "iou": 0.7, "dice": 0.8},
    ]
    assert pooled_metrics(seg, "segmentation")["iou"] == pytest.approx(0.6)


def test_fold_dataset_moves_only_the_split(synthetic_dataset, tmp_path):
    with open(synthetic_dataset / "annotations" / "dataset.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    held = {rows[0]["subject_id"]}
    out = write_fold_dataset(synthetic_dataset, tmp_path / "fold", held)
    with open(out / "annotations" / "dataset.csv", newline="") as fh:
        new = list(csv.DictReader(fh))
    assert [r["image_id"] for r in new] == [r["image_id"] for r in rows]
    assert {r["subject_id"] for r in new if r["split"] == "test"} == held
    assert (out / "images").resolve() == (synthetic_dataset / "images").resolve()


def test_cross_validate_trains_each_fold(synthetic_dataset, tmp_path):
    pytest.importorskip("keras")
    import json

    from ml.bundle import make_random_bundle, read_manifest
    from ml.cli import main

    models = tmp_path / "models"
    make_random_bundle(models, "tiny_cls", "simple_cnn", task="classification")
    out = tmp_path / "cv.json"
    args = ["evaluate", "--cv", "2", "--model", str(HERE / "configs" / "tiny_cls.yaml"),
            "--dataset", str(synthetic_dataset), "--epochs", "1", "--json", str(out),
            "--work-dir", str(tmp_path / "cv"), "--models-dir", str(models)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text())
    n_rows = len((synthetic_dataset / "annotations" / "dataset.csv").read_text().splitlines()) - 1
    assert report["k"] == 2 and report["slices"] == n_rows  # every slice predicted once
    assert sum(f["subjects"] for f in report["folds"]) == report["subjects"]
    acc = report["metrics"]["binary_accuracy"]
    assert acc["ci95"][0] <= acc["pooled"] <= acc["ci95"][1]
    record = read_manifest(models / "tiny_cls").cross_validation
    assert record is not None and record.k == 2 and record.slices == n_rows
    card = (models / "tiny_cls" / "README.md").read_text()
    pooled = record.metrics["binary_accuracy"]
    row = next(line for line in card.splitlines() if line.startswith("| binary_accuracy |"))
    assert "## Cross-validation" in card and f"2 folds over {report['subjects']} subjects" in card
    assert f"{100 * pooled.pooled:.2f} % [{100 * pooled.ci95[0]:.2f} %" in row
    assert row.count("|") == 6  # metric, single split, pooled, one column per fold


def _child_config() -> dict:
    """tiny_seg with a full-resolution refinement, warm-started from tiny_seg (a config path)."""
    from ml.training.config import load_config

    cfg = load_config(HERE / "configs" / "tiny_seg.yaml")
    cfg = {k: v for k, v in cfg.items() if k != "_path"}
    cfg["key"] = "tiny_seg_refined"
    cfg["model"] = {**cfg["model"], "internal_scale": 2, "refine_filters": 4, "refine_layers": 1}
    cfg["training"] = {**cfg["training"], "schedule": None,
                       "init_from": str(HERE / "configs" / "tiny_seg.yaml")}  # fmt: skip
    cfg["bundle"] = {**cfg["bundle"], "derived": []}
    return cfg


def test_warm_started_config_retrains_its_parent_on_each_fold_and_resumes(
    synthetic_dataset, tmp_path
):
    """The default segmenter warm-starts from another bundle: cross-validating it must not start
    a fold from weights that saw its held-out subjects, so the parent is trained per fold; a
    second run with resume reuses every bundle that matches and retrains the ones that do not."""
    pytest.importorskip("keras")
    from ml.bundle import read_manifest
    from ml.training.cv import cross_validate

    work = tmp_path / "cv" / "tiny_seg_refined"
    first = cross_validate(_child_config(), synthetic_dataset, work, k=2, epochs=1)
    assert first.task == "segmentation" and not any(f["reused"] for f in first.folds)
    for i, fold in enumerate(first.folds):
        fold_hash = _csv_sha256(work / f"fold{i}" / "dataset")
        parent = tmp_path / "cv" / "tiny_seg" / f"fold{i}" / "models" / "tiny_seg"
        assert fold["init_from"] == {"bundle": str(parent), "reused": False}
        parent_m = read_manifest(parent)
        child_m = read_manifest(work / f"fold{i}" / "models" / "tiny_seg_refined")
        assert parent_m.dataset.hash == fold_hash != _csv_sha256(synthetic_dataset)
        assert child_m.dataset.hash == fold_hash
        started = child_m.training.model_dump()["init_from"]
        assert started["weights"]["sha256"] == parent_m.weights.sha256

    # Fold 1's result file stands in for it; fold 0 lost its result (a run stopped between
    # training and writing it), so its bundles are checked and reused instead.
    child_bundle = work / "fold0" / "models" / "tiny_seg_refined"
    before = (child_bundle / "manifest.json").stat().st_mtime_ns
    (work / "fold0" / "result.json").unlink()
    again = cross_validate(_child_config(), synthetic_dataset, work, k=2, epochs=1, resume=True)
    assert all(f["reused"] for f in again.folds)
    assert again.folds[0]["init_from"]["reused"] and not again.folds[1]["init_from"]["reused"]
    assert again.metrics == first.metrics  # the same held-out predictions, pooled again
    assert (child_bundle / "manifest.json").stat().st_mtime_ns == before

    # Another learning rate is another config: its folds are trained, the parents still reused.
    changed = _child_config()
    changed["training"]["optimizer"] = {"name": "adam", "learning_rate": 1.0e-3}
    third = cross_validate(changed, synthetic_dataset, work, k=2, epochs=1, resume=True)
    assert not any(f["reused"] for f in third.folds)
    assert all(f["init_from"]["reused"] for f in third.folds)


def _csv_sha256(dataset: Path) -> str:
    from ml.data.dataset import read_rows

    return read_rows(dataset)[1]


def test_warm_start_without_a_config_is_refused(synthetic_dataset, tmp_path, capsys):
    import yaml

    from ml.cli import main

    cfg = _child_config()
    cfg["training"]["init_from"] = str(tmp_path / "some_bundle")
    config = tmp_path / "child.yaml"
    config.write_text(yaml.safe_dump(cfg))
    args = ["evaluate", "--cv", "2", "--model", str(config), "--dataset", str(synthetic_dataset),
            "--work-dir", str(tmp_path / "cv")]  # fmt: skip
    assert main(args) == 2
    assert "no training config to retrain on each fold" in capsys.readouterr().err
    assert not (tmp_path / "cv" / "child" / "fold0" / "models").exists()


def test_a_cross_validation_split_over_runs_pools_from_the_bundles_fold_results(
    synthetic_dataset, tmp_path, capsys
):
    """Fold 0 here, fold 1 "elsewhere" (another work folder): the bundle's cross_validation/
    folder carries fold 0's result across, nothing is recorded until both folds have one, and
    the recorded numbers are those of the held-out rows the fold files keep."""
    pytest.importorskip("keras")
    import json

    from ml.bundle import make_random_bundle, read_manifest
    from ml.cli import main
    from ml.training.cv import pooled_metrics

    models = tmp_path / "models"
    make_random_bundle(models, "tiny_seg", "attention_unet_lite", task="segmentation")
    results = models / "tiny_seg" / "cross_validation"
    base = ["evaluate", "--cv", "2", "--model", str(HERE / "configs" / "tiny_seg.yaml"),
            "--dataset", str(synthetic_dataset), "--epochs", "1",
            "--models-dir", str(models)]  # fmt: skip

    assert main([*base, "--folds", "0", "--work-dir", str(tmp_path / "here")]) == 0
    assert "partial: 1 of 2 folds have results (0)" in capsys.readouterr().out
    assert sorted(p.name for p in results.iterdir()) == ["fold0.json"]
    assert read_manifest(models / "tiny_seg").cross_validation is None

    # A fold result made with another epoch cap is not this cross-validation's: not reused.
    fold0 = json.loads((results / "fold0.json").read_text())
    (results / "fold0.json").write_text(json.dumps({**fold0, "epochs_cap": 2}))
    elsewhere = ["--work-dir", str(tmp_path / "elsewhere"), "--resume"]
    assert main([*base, "--folds", "1", *elsewhere]) == 0
    assert "partial: 1 of 2 folds have results (1)" in capsys.readouterr().out
    assert read_manifest(models / "tiny_seg").cross_validation is None

    # That run trained fold 1 and kept its result; with fold 0's restored, both stand in.
    (results / "fold0.json").write_text(json.dumps(fold0))
    assert main([*base, *elsewhere]) == 0
    assert capsys.readouterr().out.count("reused from an earlier run") == 2
    record = read_manifest(models / "tiny_seg").cross_validation
    assert record is not None and record.fold_results == "cross_validation/"
    assert [f.reused for f in record.folds] == [True, True]
    files = [json.loads((results / f"fold{i}.json").read_text()) for i in range(2)]
    rows = [r for f in files for r in f["rows"]]
    n_rows = len((synthetic_dataset / "annotations" / "dataset.csv").read_text().splitlines()) - 1
    assert record.slices == len(rows) == n_rows  # every slice held out exactly once
    assert record.metrics["iou"].pooled == round(pooled_metrics(rows, "segmentation")["iou"], 4)
    for source, values in record.by_source.items():
        mine = [r for r in rows if r["source"] == source]
        assert values["n"] == len(mine)
        assert values["iou"] == round(pooled_metrics(mine, "segmentation")["iou"], 4)
    assert sum(v["subjects"] for v in record.by_source.values()) == record.subjects
    card = (models / "tiny_seg" / "README.md").read_text()
    assert "Pooled by source" in card and "`cross_validation/`" in card


def test_folds_outside_the_deal_are_refused(synthetic_dataset, tmp_path, capsys):
    from ml.cli import main

    args = ["evaluate", "--cv", "2", "--model", str(HERE / "configs" / "tiny_seg.yaml"),
            "--dataset", str(synthetic_dataset), "--work-dir", str(tmp_path / "cv")]  # fmt: skip
    assert main([*args, "--folds", "2"]) == 2
    assert "--folds must name folds 0..1" in capsys.readouterr().err
    assert main([*args, "--folds", "first"]) == 2
    assert "--folds takes fold numbers" in capsys.readouterr().err
