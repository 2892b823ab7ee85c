"""Bundles: atomic write, float16 storage, verified load, round trip, discovery."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("keras")

from ml.bundle import (  # noqa: E402
    BundleError,
    discover_bundles,
    label_provenance,
    load_bundle,
    make_random_bundle,
    new_manifest,
    read_manifest,
    round_weights,
    sha256_file,
    update_manifest,
    write_bundle,
)
from ml.models import ARCHITECTURES, SPECS, build_model  # noqa: E402
from ml.predict import classify, predict_bundle, segment  # noqa: E402

X = np.random.default_rng(1).random((2, 64, 64, 1)).astype("float32")


def _predict(model, task):
    if task == "classification":
        return np.concatenate(classify(model, X), axis=1)
    return segment(model, X)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_round_trip_identical_predictions(tmp_path, architecture):
    cfg = dict(SPECS[architecture].tiny)
    model = build_model(architecture, cfg)
    manifest = new_manifest(key="m", architecture=architecture, cfg=cfg)
    task = manifest.task
    # float32 storage: bit-identical; float16: identical to the model rounded the same way.
    write_bundle(model, tmp_path / "f32", manifest, storage_dtype="float32")
    np.testing.assert_array_equal(
        _predict(load_bundle(tmp_path / "f32").model, task), _predict(model, task)
    )
    write_bundle(model, tmp_path / "f16", manifest, storage_dtype="float16")
    round_weights(model, "float16")
    np.testing.assert_array_equal(
        _predict(load_bundle(tmp_path / "f16").model, task), _predict(model, task)
    )
    assert (tmp_path / "f16" / "model.weights.h5").stat().st_size < (
        tmp_path / "f32" / "model.weights.h5"
    ).stat().st_size


def test_manifest_fields(tmp_path):
    path = make_random_bundle(tmp_path, "cls", "hybrid_v3", task="classification", default=True)
    m = read_manifest(path)
    assert m.schema_version == 2
    assert m.parameters and m.parameters > 0 and m.flops and m.flops > 0
    assert m.outputs.binary_output == ["negative", "positive"]
    assert m.outputs.stage_output == ["Normal", "Early", "Moderate", "Advanced"]
    assert m.gradcam_layer == "top_activation"
    assert m.attention_layers == ["transformer1", "transformer2"]
    assert m.weights.sha256 == sha256_file(path / "model.weights.h5")
    assert m.weights.storage_dtype == "float16"
    assert m.label_provenance.research_use_only is True
    assert "Research use only" in m.intended_use
    assert m.default is True
    assert m.input.shape == [64, 64, 1]
    on_disk = json.loads((path / "manifest.json").read_text())
    assert on_disk["schema_version"] == 2 and on_disk["key"] == "cls"


def test_tampered_weights_fail_clearly(tmp_path):
    path = make_random_bundle(tmp_path, "seg", "attention_unet_lite")
    weights = path / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the manifest"):
        load_bundle(path)


def test_swapped_weights_fail_clearly(tmp_path):
    a = make_random_bundle(tmp_path, "a", "simple_cnn", seed=1)
    b = make_random_bundle(tmp_path, "b", "simple_cnn", seed=2)
    (a / "model.weights.h5").write_bytes((b / "model.weights.h5").read_bytes())
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(a)


def test_bad_manifests(tmp_path):
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path)
    path = make_random_bundle(tmp_path, "x", "simple_cnn")
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        load_bundle(path)
    (path / "manifest.json").write_text(json.dumps({"key": "x"}))
    with pytest.raises(BundleError, match="task: Field required"):
        load_bundle(path)


def test_write_is_atomic_and_replaces(tmp_path):
    path = make_random_bundle(tmp_path, "k", "simple_cnn", seed=1)
    first = read_manifest(path).weights.sha256
    make_random_bundle(tmp_path, "k", "simple_cnn", seed=2)
    assert read_manifest(path).weights.sha256 != first
    assert [p.name for p in tmp_path.iterdir()] == ["k"]  # no temp folders left behind

    tiny = dict(SPECS["simple_cnn"].tiny)
    model = build_model("simple_cnn", tiny)
    bad = new_manifest(key="k", architecture="simple_cnn", cfg=tiny)
    bad = bad.model_copy(update={"task": "segmentation"})
    with pytest.raises(BundleError, match="is not segmentation"):
        write_bundle(model, path, bad)
    assert read_manifest(path).task == "classification"  # old bundle intact
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_update_manifest_keeps_hash(tmp_path):
    path = make_random_bundle(tmp_path, "k", "attention_unet")
    update_manifest(path, {"metrics": {"iou": 0.5, "cv": {"folds": 5}}})
    bundle = load_bundle(path)
    assert bundle.manifest.metrics.iou == 0.5
    assert bundle.manifest.metrics.model_extra == {"cv": {"folds": 5}}


def test_discover_and_provenance(tmp_path):
    make_random_bundle(tmp_path, "b", "simple_cnn", label_source="clinical")
    make_random_bundle(tmp_path / "a", "a", "attention_unet_lite")
    (tmp_path / "notes").mkdir()
    assert [p.name for p in discover_bundles(tmp_path)] == ["a", "b"]
    assert discover_bundles(tmp_path / "missing") == []
    bundle = load_bundle(tmp_path / "b")
    out = predict_bundle(bundle, X)
    assert out["label_provenance"]["label_source"] == "clinical"
    assert all(p["label_source"] == "clinical" for p in out["predictions"])
    assert label_provenance("clinical").research_use_only is True
    seg = predict_bundle(load_bundle(tmp_path / "a"), X)
    assert seg["mask"].shape == (2, 64, 64)


def test_roi_from_mask():
    from ml.data.synthetic import make_phantom
    from ml.predict import roi_from_mask

    phantom = make_phantom(0)
    bbox, roi = roi_from_mask(phantom.mask)
    x1, y1, x2, y2 = bbox
    assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256
    assert roi.shape == (256, 256) and roi.max() == 1 and roi[y1:y2, x1:x2].all()
    assert roi_from_mask(np.zeros((256, 256), np.uint8)) == (
        None,
        pytest.approx(np.zeros((256, 256))),
    )


def test_bundle_leaves_out_optimizer_state(tmp_path):
    import h5py

    cfg = dict(SPECS["simple_cnn"].tiny)
    model = build_model("simple_cnn", cfg)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.train_on_batch(X, [np.zeros(2), np.zeros(2)])
    manifest = new_manifest(key="m", architecture="simple_cnn", cfg=cfg)
    path = write_bundle(model, tmp_path / "m", manifest, storage_dtype="float16")
    with h5py.File(path / "model.weights.h5") as fh:
        assert "optimizer" not in fh
    np.testing.assert_allclose(
        np.concatenate(classify(load_bundle(path).model, X), axis=1),
        np.concatenate(classify(model, X), axis=1),
        atol=2e-3,
    )


def test_repack_keeps_predictions_and_files(tmp_path):
    from ml.bundle import repack_bundle

    path = make_random_bundle(tmp_path, "k", "hybrid_v2")
    (path / "plots").mkdir()
    (path / "plots" / "x.png").write_bytes(b"png")
    before = _predict(load_bundle(path).model, "classification")
    repack_bundle(path)
    np.testing.assert_array_equal(_predict(load_bundle(path).model, "classification"), before)
    assert (path / "plots" / "x.png").read_bytes() == b"png"


def test_manifest_schema_versions(tmp_path):
    """A version-1 manifest (no schema_version) loads; a newer one fails with a clear message."""
    path = make_random_bundle(tmp_path, "k", "simple_cnn")
    data = json.loads((path / "manifest.json").read_text())
    del data["schema_version"]
    (path / "manifest.json").write_text(json.dumps(data))
    assert read_manifest(path).schema_version == 2
    assert load_bundle(path).manifest.key == "k"  # the weights' hash still matches

    from ml.manifest import upgrade_files

    assert upgrade_files(tmp_path) == [path / "manifest.json"]
    assert json.loads((path / "manifest.json").read_text())["schema_version"] == 2
    assert upgrade_files(tmp_path) == []  # already current
    load_bundle(path)

    data["schema_version"] = 3
    (path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="schema_version 3 is newer"):
        read_manifest(path)
    data["schema_version"] = 2
    data["surprise"] = 1
    (path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="surprise: Extra inputs are not permitted"):
        read_manifest(path)


def test_manifest_refuses_provenance_that_is_not_research_use(tmp_path):
    path = make_random_bundle(tmp_path, "k", "simple_cnn")
    data = json.loads((path / "manifest.json").read_text())
    data["label_provenance"]["research_use_only"] = False
    (path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="research_use_only"):
        read_manifest(path)


def test_shipped_manifests_are_current_schema():
    from pathlib import Path

    models = Path(__file__).resolve().parents[2] / "models"
    paths = sorted(models.glob("*/manifest.json"))
    assert paths, "the checkout ships model bundles"
    for p in paths:
        assert json.loads(p.read_text())["schema_version"] == 2, p
