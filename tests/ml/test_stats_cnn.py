"""The statistics-aware CNN and its ImageStatistics layer."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ml.layers import ImageStatistics  # noqa: E402
from ml.models import build_model, spec  # noqa: E402


def test_statistics_match_numpy():
    rng = np.random.default_rng(0)
    image = rng.random((2, 16, 12, 1)).astype(np.float32)
    image[1, 8:] = 0.0  # a dark lower half
    out = np.asarray(ImageStatistics(thresholds=(0.1, 0.5))(image))
    assert out.shape == (2, 7)
    x = image[..., 0]
    np.testing.assert_allclose(out[:, 0], x.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(out[:, 1], x[:, 8:].mean(axis=(1, 2)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out[:, 2], x.std(axis=(1, 2)), rtol=1e-4)
    gx = x[:, :-1, 1:] - x[:, :-1, :-1]
    gy = x[:, 1:, :-1] - x[:, :-1, :-1]
    mag = np.sqrt(gx**2 + gy**2)
    np.testing.assert_allclose(out[:, 3], mag.mean(axis=(1, 2)), rtol=1e-4)
    np.testing.assert_allclose(out[:, 5], (mag > 0.1).mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(out[:, 6], (mag > 0.5).mean(axis=(1, 2)), rtol=1e-5)
    assert out[1, 1] == 0.0


def test_statistics_layer_round_trips(tmp_path):
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, ImageStatistics(thresholds=(0.2,), name="s")(inp))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("s").thresholds == (0.2,)
    x = np.random.default_rng(1).random((1, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_stats_cnn_builds_small_with_named_layers_and_a_gradcam_layer():
    model = build_model("stats_cnn")
    assert model.count_params() == 65_914
    assert spec("stats_cnn").gradcam_layer_for() == "conv4"
    assert model.get_layer("conv4") is not None
    out = model(np.zeros((1, 256, 256, 1), np.float32), training=False)
    assert [tuple(o.shape) for o in out] == [(1, 2), (1, 4)]
