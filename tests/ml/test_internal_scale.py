"""A U-Net with internal_scale runs the same weights on an area-downsampled input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("keras")


def test_internal_scale_reuses_low_resolution_weights_exactly():
    import keras

    from ml.models import build_model

    keras.utils.set_random_seed(0)
    cfg = {"base_filters": 4, "depth": 2}
    low = build_model("attention_unet_lite", {**cfg, "input_size": 32})
    full = build_model("attention_unet_lite", {**cfg, "input_size": 64, "internal_scale": 2})
    assert full.count_params() == low.count_params()
    full.set_weights(low.get_weights())

    rng = np.random.default_rng(0)
    image = rng.random((1, 64, 64, 1)).astype(np.float32)
    area = cv2.resize(image[0, ..., 0], (32, 32), interpolation=cv2.INTER_AREA)[None, ..., None]

    out_full = np.asarray(full(image, training=False))
    out_low = np.asarray(low(area, training=False))
    assert out_full.shape == (1, 64, 64, 1)
    # 2x2 average pooling is exactly an area downsampling: before the upscale, the full-size
    # model computes the low-resolution model's probabilities.
    inner = keras.Model(full.input, full.get_layer("mask").output)
    np.testing.assert_allclose(np.asarray(inner(image, training=False)), out_low, atol=1e-5)
    # The bilinear upscale keeps them: each 2x2 block averages to about its low-resolution pixel.
    pooled = out_full[0, ..., 0].reshape(32, 2, 32, 2).mean(axis=(1, 3))
    assert np.corrcoef(pooled.ravel(), out_low.ravel())[0, 1] > 0.9


def test_internal_scale_must_divide_the_input():
    from ml.models import build_model

    with pytest.raises(ValueError, match="divisible"):
        build_model("attention_unet_lite", {"input_size": 40, "depth": 2, "internal_scale": 3})


def _tiny(**extra):
    from ml.models import build_model

    cfg = {"input_size": 64, "base_filters": 4, "depth": 2, "internal_scale": 2, **extra}
    return build_model("attention_unet_lite", cfg)


@pytest.mark.parametrize("features", [False, True])
def test_refinement_starts_as_the_network_it_refines(tmp_path, features):
    base = _tiny()
    refined = _tiny(refine_filters=4, refine_layers=2, refine_features=features)
    assert {"refine_conv1", "refine_conv2", "refine_delta", "refined"} <= {
        layer.name for layer in refined.layers
    }
    # The refinement sees the image and the probabilities, and with refine_features the
    # decoder's last 4 feature maps, upsampled to the input size.
    kernel = refined.get_layer("refine_conv1").get_weights()[0]
    assert kernel.shape == (3, 3, 2 + 4 * features, 4)
    for layer in base.layers:
        refined.get_layer(layer.name).set_weights(layer.get_weights())
    image = np.random.default_rng(1).random((2, 64, 64, 1)).astype(np.float32)
    before = np.asarray(base(image, training=False))
    after = np.asarray(refined(image, training=False))
    # The correction's last convolution starts at zero: the same probabilities.
    np.testing.assert_allclose(after, before, atol=1e-5)

    # Once it has learnt something the output moves, and the model saves and loads whole.
    delta = refined.get_layer("refine_delta")
    kernel, bias = delta.get_weights()
    delta.set_weights([kernel, bias + 2.0])
    moved = np.asarray(refined(image, training=False))
    assert (moved > before).all()
    _assert_saves_and_loads(refined, tmp_path / "refined.keras", image, moved)


def test_refinement_needs_an_internal_scale():
    with pytest.raises(ValueError, match="internal_scale"):
        _tiny(internal_scale=1, refine_filters=4)


def test_a_standardised_input_makes_the_segmenter_blind_to_a_brightness_gain(tmp_path):
    model = _tiny(refine_filters=4, input_norm="standardize")
    # The network and the refinement both see the standardised image.
    assert model.get_layer("refine_concat").input[0] is model.get_layer("standardize").output
    image = np.random.default_rng(2).random((2, 64, 64, 1)).astype(np.float32)
    out = np.asarray(model(image, training=False))
    darker = np.asarray(model(image * 0.3, training=False))
    np.testing.assert_allclose(darker, out, atol=5e-3)
    # Without it a darker scanner changes the output.
    plain = _tiny(refine_filters=4)
    assert not np.allclose(
        np.asarray(plain(image * 0.3, training=False)),
        np.asarray(plain(image, training=False)),
        atol=5e-3,
    )
    _assert_saves_and_loads(model, tmp_path / "standardised.keras", image, out)


def test_an_unknown_input_norm_is_refused():
    with pytest.raises(ValueError, match="input_norm"):
        _tiny(input_norm="percentile")


def _assert_saves_and_loads(model, path, image, expected):
    """The model saved whole and loaded back gives the same output."""
    import keras

    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(image, training=False)), expected, atol=1e-6)
