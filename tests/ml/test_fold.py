"""Serving copies with BatchNormalization folded into the convolutions: same function, same
explanations, explained layers untouched, and a copy that does not match is never used."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import ml.fold as fold  # noqa: E402
from ml.explain.gradcam import gradcam  # noqa: E402
from ml.models import ARCHITECTURES, build_model, spec  # noqa: E402


def _trained_looking(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every BatchNormalization statistics and an affine map far from the identity."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, n).astype(np.float32))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.3, n).astype(np.float32))
    return model


def _images(size: int, n: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 1)).astype(np.float32)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_folds_to_the_same_function(architecture):
    s = spec(architecture)
    model = _trained_looking(build_model(architecture, s.tiny))
    keep = [k for k in [s.gradcam_layer_for(s.tiny)] if k]
    folded, names = fold.fold_batchnorm(model, keep=keep)
    bn_after_conv = fold.foldable_pairs(model)
    if not bn_after_conv:
        assert folded is model and names == []
        return
    assert names and folded is not model
    # Every layer keeps its name; a folded BatchNormalization is a pass-through of that name.
    assert [la.name for la in folded.layers] == [la.name for la in model.layers]
    for name in names:
        assert isinstance(folded.get_layer(name), fold.FoldedBatchNorm)
    # The explained convolution is never folded: same class, same weights, and the
    # BatchNormalization after it (if any) still a BatchNormalization.
    for name in keep:
        before, after = model.get_layer(name), folded.get_layer(name)
        assert type(after) is type(before)
        for w0, w1 in zip(before.get_weights(), after.get_weights(), strict=True):
            np.testing.assert_array_equal(w0, w1)
        for bn, conv in bn_after_conv.items():
            if conv == name:
                assert isinstance(folded.get_layer(bn), layers.BatchNormalization)
    x = _images(int(model.input_shape[1]))
    assert fold.max_output_difference(model, folded, x, keep) < 1e-5
    if keep:  # the heatmaps are the same
        h0, c0, _ = gradcam(model, x, keep[0])
        h1, c1, _ = gradcam(folded, x, keep[0])
        np.testing.assert_array_equal(c0, c1)
        np.testing.assert_allclose(h0, h1, atol=1e-4)


def test_the_architectures_with_batchnorm_after_a_convolution_fold():
    folding = set()
    for architecture in ARCHITECTURES:
        s = spec(architecture)
        keep = [k for k in [s.gradcam_layer_for(s.tiny)] if k]
        if fold.foldable_pairs(build_model(architecture, s.tiny), keep):
            folding.add(architecture)
    assert folding >= {
        "attention_unet_lite",
        "hybrid_v1",
        "hybrid_v2",
        "hybrid_v3",
        "stats_cnn",
        "ordinal_cnn",
        "harmonized_ordinal",
    }


def test_only_a_linear_convolution_feeding_nothing_else_is_folded():
    inputs = keras.Input((16, 16, 2))
    a = layers.Conv2D(4, 3, padding="same", name="plain")(inputs)
    a = layers.BatchNormalization(name="bn_plain")(a)
    b = layers.Conv2D(4, 3, padding="same", activation="relu", name="activated")(inputs)
    b = layers.BatchNormalization(name="bn_activated")(b)
    c = layers.Conv2D(4, 3, padding="same", name="shared")(inputs)
    c2 = layers.BatchNormalization(name="bn_shared")(c)
    d = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="depthwise")(inputs)
    d = layers.BatchNormalization(name="bn_depthwise")(d)
    e = layers.Conv2D(4, 1, name="explained")(inputs)
    e = layers.BatchNormalization(name="bn_explained")(e)
    raw = layers.Conv2D(4, 1, name="raw")(inputs)  # also an output of the model
    f = layers.BatchNormalization(name="bn_raw")(raw)
    out = layers.Concatenate()([a, b, c, c2, d, e, f])
    model = _trained_looking(keras.Model(inputs, [out, raw]), seed=3)
    pairs = fold.foldable_pairs(model, keep=["explained"])
    assert pairs == {"bn_plain": "plain", "bn_depthwise": "depthwise"}
    folded, names = fold.fold_batchnorm(model, keep=["explained"])
    assert sorted(names) == ["bn_depthwise", "bn_plain"]
    x = np.random.default_rng(4).normal(size=(2, 16, 16, 2)).astype(np.float32)
    for y0, y1 in zip(model(x), folded(x), strict=True):
        np.testing.assert_allclose(y0, y1, rtol=1e-5, atol=1e-5)


def test_a_copy_that_does_not_match_is_not_served(monkeypatch):
    s = spec("attention_unet_lite")
    model = _trained_looking(build_model("attention_unet_lite", s.tiny))
    served, report = fold.fold_for_serving(model)
    assert served is not model and report["used"] and report["folded"]
    assert report["max_difference"] < fold.SERVING_TOLERANCE

    right = fold._folded_conv_weights

    def wrong(conv, bn):  # e.g. a folding rule that got the shift wrong
        kernel, bias = right(conv, bn)
        return [kernel, bias + 1.0]

    monkeypatch.setattr(fold, "_folded_conv_weights", wrong)
    served, report = fold.fold_for_serving(model)
    assert served is model and not report["used"]
    assert report["max_difference"] > fold.SERVING_TOLERANCE
