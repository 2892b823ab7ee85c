"""Grad-CAM / Grad-CAM++ / Eigen-CAM mechanics on tiny models built here."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ml.explain.gradcam import (  # noqa: E402
    METHODS,
    compute_cam,
    find_last_conv_layer,
    find_layer_path,
    gradcam,
    make_cam_fn,
    normalize_maps,
    resolve_head,
)

S = 32


def _backbone_layers(x):
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    x = keras.layers.MaxPooling2D(name="p1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="top_conv")(x)
    x = keras.layers.BatchNormalization(name="top_bn")(x)
    return keras.layers.Activation("relu", name="top_activation")(x)


def dual_head(nested: bool, seed: int = 0):
    """A two-head classifier whose conv stack is inlined or wrapped as a sub-model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((S, S, 1), name="image")
    if nested:
        inner_in = keras.Input((S, S, 1), name="backbone_in")
        backbone = keras.Model(inner_in, _backbone_layers(inner_in), name="backbone")
        x = backbone(inputs)
    else:
        x = _backbone_layers(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    binary = keras.layers.Dense(2, activation="softmax", name="binary_output")(x)
    stage = keras.layers.Dense(4, activation="softmax", name="stage_output")(x)
    return keras.Model(inputs, [binary, stage], name="nested" if nested else "flat")


@pytest.fixture(scope="module")
def models():
    flat, nested = dual_head(False), dual_head(True)
    # Same weights in both, so both lookups must give the same maps.
    nested.set_weights(flat.get_weights())
    return flat, nested


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((3, S, S, 1)).astype(np.float32)


def test_layer_lookup_flat_and_nested(models):
    flat, nested = models
    assert [lyr.name for lyr in find_layer_path(flat, "top_conv")] == ["top_conv"]
    assert [lyr.name for lyr in find_layer_path(nested, "top_conv")] == ["backbone", "top_conv"]
    assert find_layer_path(nested, "backbone/top_conv")[-1].name == "top_conv"
    assert find_last_conv_layer(flat) == "top_activation"
    assert find_last_conv_layer(nested) == "backbone/top_activation"
    with pytest.raises(ValueError, match="no layer named"):
        find_layer_path(flat, "nope")


@pytest.mark.parametrize("method", METHODS)
def test_nested_and_inlined_give_the_same_maps(models, images, method):
    flat, nested = models
    a = compute_cam(flat, images, "top_activation", "stage_output", method=method)
    b = compute_cam(nested, images, "top_activation", "stage_output", method=method)
    np.testing.assert_allclose(a.heatmaps, b.heatmaps, atol=1e-4)
    np.testing.assert_array_equal(a.class_index, b.class_index)
    np.testing.assert_allclose(a.probabilities, flat.predict_on_batch(images)[1], atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("head", ["binary_output", "stage"])
def test_maps_are_finite_unit_range_image_sized(models, images, method, head):
    flat, _ = models
    blank = np.zeros((1, S, S, 1), np.float32)
    for batch in (images, blank):
        hm, ci, prob = gradcam(flat, batch, "top_activation", head, method=method)
        assert hm.shape == (len(batch), S, S) and hm.dtype == np.float32
        assert np.isfinite(hm).all() and hm.min() >= 0.0 and hm.max() <= 1.0
        assert ci.shape == prob.shape == (len(batch),)
        assert ((prob >= 0) & (prob <= 1)).all()


def test_zero_gradients_give_zero_map_not_nan():
    cams = np.zeros((2, 4, 4))
    cams[1] = np.nan
    out = normalize_maps(cams, (16, 16))
    assert out.shape == (2, 16, 16) and not np.isnan(out).any() and out.max() == 0.0


def test_peak_is_one_after_resize():
    cam = np.zeros((1, 4, 4))
    cam[0, 1, 2] = 3.0
    out = normalize_maps(cam, (32, 32))
    assert out.max() == pytest.approx(1.0)


def test_class_index_default_predicted_and_override(models, images):
    flat, _ = models
    p_status, _ = flat.predict_on_batch(images)
    res = compute_cam(flat, images, "top_activation", "binary_output")
    np.testing.assert_array_equal(res.class_index, np.argmax(p_status, axis=1))
    other = 1 - res.class_index
    res2 = compute_cam(flat, images, "top_activation", "binary_output", class_index=other)
    np.testing.assert_array_equal(res2.class_index, other)
    np.testing.assert_allclose(res2.prob, p_status[np.arange(3), other], atol=1e-5)
    assert res.score_kind == "log_odds"
    # For two classes the log-odds of one is minus the other's: the maps split the evidence.
    assert not np.allclose(res.heatmaps, res2.heatmaps)


def test_batch_equals_single_and_function_is_cached(models, images):
    flat, _ = models
    fn = make_cam_fn(flat, "top_activation", "binary_output")
    assert make_cam_fn(flat, "top_activation", "binary") is fn
    batch = compute_cam(flat, images, "top_activation", "binary_output").heatmaps
    single = compute_cam(flat, images[1], "top_activation", "binary_output").heatmaps
    np.testing.assert_allclose(batch[1], single[0], atol=1e-5)


def test_segmentation_head_explains_mean_foreground():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((S, S, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="dec_conv")(inputs)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    seg = keras.Model(inputs, out)
    assert resolve_head(seg, "mask") == (0, "mask", "segmentation")
    assert find_last_conv_layer(seg) == "dec_conv"  # the 1-channel output is skipped
    img = np.random.default_rng(2).random((2, S, S, 1)).astype(np.float32)
    res = compute_cam(seg, img, None, "mask")
    assert res.task == "segmentation" and res.score_kind == "mean_foreground_probability"
    prob = seg.predict_on_batch(img)
    np.testing.assert_allclose(res.prob, prob.reshape(2, -1).mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(res.output, prob, atol=1e-5)
    assert res.heatmaps.shape == (2, S, S) and np.isfinite(res.heatmaps).all()


def test_unknown_head_and_method(models, images):
    flat, _ = models
    with pytest.raises(ValueError, match="no head"):
        compute_cam(flat, images, "top_activation", "severity")
    with pytest.raises(ValueError, match="unknown CAM method"):
        compute_cam(flat, images, "top_activation", "binary", method="lime")
