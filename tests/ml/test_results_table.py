"""The README results table comes from manifests, so its numbers are the measured ones."""

from __future__ import annotations

import pytest

pytest.importorskip("keras")


def test_table_shows_measured_metrics_from_manifests(tmp_path):
    from ml.bundle import make_random_bundle, update_manifest
    from ml.evaluation.results_table import render

    path = make_random_bundle(tmp_path, "cls", "simple_cnn", default=True)
    update_manifest(path, {"metrics": {"binary_accuracy": 0.8125, "stage_macro_f1": 0.4321,
                                       "split": "test"}})  # fmt: skip
    seg = make_random_bundle(tmp_path, "seg", "attention_unet_lite")
    run = {"epochs_run": 12, "seconds": 150.0}
    update_manifest(path, {"training": {**run, "machine": {"accelerator": None}}})
    update_manifest(seg, {"training": {**run, "machine": {"accelerator": "NVIDIA H200"}}})

    table = render(tmp_path)

    assert "| `cls` (default) |" in table
    assert "81.25 %" in table and "0.432" in table
    assert "| `seg` |" in table
    assert "12 ep, 2 min, H200 |" in table and "12 ep, 2 min, CPU |" in table  # where it trained
    assert "96.67 %" in table  # the design's reported number stays labelled as reported
    # segmentation rows come first
    assert table.index("`seg`") < table.index("`cls`")


def test_empty_models_dir_says_so(tmp_path):
    from ml.evaluation.results_table import render

    assert "no bundles in this checkout" in render(tmp_path)


def test_table_shows_levels_and_calibration(tmp_path):
    from ml.bundle import make_random_bundle, update_manifest
    from ml.evaluation.results_table import render

    seg = make_random_bundle(tmp_path, "seg", "attention_unet_lite")
    per_level = {n: {"dice": 0.9, "ci95": [0.85, 0.93], "n": 10} for n in ("L1", "L3")}
    levels = {"per_level": per_level, "all_levels_named": 0.875, "slices": 10, "subjects": 3}
    update_manifest(seg, {"levels": levels})
    cls = make_random_bundle(tmp_path, "cls", "simple_cnn")
    head = {"temperature": 2.5, "ece_before": 0.2, "ece_after": 0.05, "nll_before": 1.0,
            "nll_after": 0.8}  # fmt: skip
    cal = {"fitted_on": "val", "n_fit": 5, "n_eval": 9, "binary": head, "stage": head}
    update_manifest(cls, {"calibration": cal})

    table = render(tmp_path)
    assert "| `seg` | 0.900 (0.85-0.93) | — | 0.900 (0.85-0.93) | — | — | 87.5% | 10 |" in table
    assert "| `cls` | 2.50 | 0.200 -> 0.050 | 2.50 | 0.200 -> 0.050 |" in table


def test_table_shows_cross_validation_beside_the_split(tmp_path):
    from ml.bundle import make_random_bundle, update_manifest
    from ml.evaluation.results_table import render

    cls = make_random_bundle(tmp_path, "cls", "simple_cnn")
    update_manifest(cls, {"metrics": {"binary_accuracy": 0.9, "split": "test"}})
    cv = {
        "k": 5,
        "subjects": 72,
        "slices": 648,
        "metrics": {"binary_accuracy": {"pooled": 0.85, "fold_mean": 0.86, "ci95": [0.8, 0.9]}},
    }
    update_manifest(cls, {"cross_validation": cv})  # fmt: skip
    table = render(tmp_path)
    assert "| `cls` | 5 | binary_accuracy | 90.00 % | 85.00 % (80.00 %-90.00 %) |" in table
