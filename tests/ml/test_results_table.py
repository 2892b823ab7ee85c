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
