"""The rule-feature ordinal CNN: exact Canny, rule features, quantiles and ordinal heads."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
cv2 = pytest.importorskip("cv2")

from ml.data.labels import image_features  # noqa: E402
from ml.data.synthetic import make_phantom  # noqa: E402
from ml.layers import IntensityQuantiles, OrdinalHeads, RuleFeatures  # noqa: E402
from ml.layers.rule_features import canny_edges  # noqa: E402
from ml.models import build_model, spec  # noqa: E402


def _u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(image, np.float64) * 255), 0, 255).astype(np.uint8)


def _slices() -> np.ndarray:
    """Phantoms of both profiles, a noise image, and a flat and a hard-edged one (uint8)."""
    rng = np.random.default_rng(3)
    out = [_u8(make_phantom(seed, 96, profile=p).image) for seed, p in ((1, "t1"), (2, "t2"))]
    out.append(rng.integers(0, 256, (96, 96)).astype(np.uint8))
    out.append(np.full((96, 96), 77, np.uint8))
    block = np.zeros((96, 96), np.uint8)
    block[20:70, 30:60] = 200
    out.append(block)
    return np.stack(out)


def test_canny_matches_opencv_pixel_for_pixel():
    imgs = _slices()
    ours = np.asarray(canny_edges(imgs.astype(np.float32))) > 0.5
    for i, img in enumerate(imgs):
        ref = cv2.Canny(img, 50, 150) > 0
        assert np.array_equal(ours[i], ref), f"image {i}: {np.sum(ours[i] != ref)} pixels differ"
    assert ours[2].any() and ours[4].any()  # noise and the block do have edges
    assert not ours[3].any()  # a flat image has none


def test_rule_features_are_the_labelling_rules_features():
    imgs = _slices()
    got = np.asarray(RuleFeatures()(imgs[..., None].astype(np.float32) / 255.0))
    for i, img in enumerate(imgs):
        f = image_features(img)
        want = [f["mean"] / 255, f["lower_mean"] / 255, f["std"] / 255, f["edge_density"]]
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_intensity_quantiles_match_numpy():
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
    got = np.asarray(IntensityQuantiles(5)(x))
    want = np.quantile(x.reshape(2, -1), np.linspace(0.05, 0.95, 5), axis=1).T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_ordinal_heads_are_consistent_probabilities():
    layer = OrdinalHeads()
    scores = np.linspace(-6, 6, 41, dtype=np.float32)[:, None]
    layer(scores)  # builds the weights
    layer.raw_gaps.assign(np.array([0.3, -1.0, 2.0], np.float32))  # any gaps keep the order
    cuts = np.asarray(layer.cuts())
    assert np.all(np.diff(cuts) > 0)
    status_logits, stage_logits = (np.asarray(t) for t in layer(scores))
    p_pos = np.asarray(keras.ops.softmax(status_logits))[:, 1]
    stage = np.asarray(keras.ops.softmax(stage_logits))
    np.testing.assert_allclose(stage.sum(axis=1), 1.0, rtol=1e-5)
    # Severity is monotone: more score, more AS-positive and never a lower stage.
    assert np.all(np.diff(p_pos) > 0)
    expected_stage = stage @ np.arange(4)
    assert np.all(np.diff(expected_stage) > 0)
    # A stage above Normal needs a positive status: P(stage >= Early) <= P(positive).
    assert np.all(1.0 - stage[:, 0] <= p_pos + 1e-6)
    s = scores[:, 0]
    np.testing.assert_allclose(p_pos, 1 / (1 + np.exp(-(s - cuts[0]))), rtol=1e-4, atol=1e-6)


def test_ordinal_cnn_builds_with_a_gradcam_layer_and_sums_to_one():
    model = build_model("ordinal_cnn")
    assert spec("ordinal_cnn").gradcam_layer_for() == "conv4"
    names = [layer.name for layer in model.layers]
    for name in ("rule_features", "statistics", "quantiles", "severity_score", "ordinal"):
        assert name in names
    x = np.stack([make_phantom(seed, 256).image for seed in (1, 2)])[..., None]
    binary, stage = (np.asarray(o) for o in model(x, training=False))
    assert binary.shape == (2, 2) and stage.shape == (2, 4)
    np.testing.assert_allclose(binary.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(stage.sum(1), 1.0, rtol=1e-5)
