"""Attention rollout: the arithmetic, and hybrid v3's map on the image."""

from __future__ import annotations

import numpy as np
import pytest

from ml.explain.attention import rollout, token_map


def _random_attention(rng, n, heads, t):
    a = rng.random((n, heads, t, t))
    return a / a.sum(axis=-1, keepdims=True)


def test_rollout_rows_sum_to_one_and_match_the_definition():
    rng = np.random.default_rng(0)
    layers = [_random_attention(rng, 2, 3, 5) for _ in range(3)]
    joint = rollout(layers)
    np.testing.assert_allclose(joint.sum(axis=-1), 1.0, atol=1e-12)
    # By hand: mean heads, + I, renormalise rows, multiply last @ ... @ first.
    ref = np.eye(5)[None].repeat(2, axis=0)
    for a in layers:
        m = a.mean(axis=1) + np.eye(5)
        m = m / m.sum(axis=-1, keepdims=True)
        ref = m @ ref
    np.testing.assert_allclose(joint, ref, atol=1e-12)


def test_identity_attention_rolls_out_to_identity():
    eye = np.eye(4)[None, None].repeat(2, axis=1)
    joint = rollout([eye, eye])
    np.testing.assert_allclose(joint[0], np.eye(4))
    # Class token attending only to itself leaves nothing on the spatial tokens.
    w = token_map(joint, has_class_token=True)
    assert w.shape == (1, 3) and w.sum() == 0.0


def test_token_map_with_and_without_class_token():
    rng = np.random.default_rng(1)
    joint = rollout([_random_attention(rng, 2, 2, 10)])
    with_cls = token_map(joint, has_class_token=True)
    np.testing.assert_allclose(with_cls, joint[:, 0, 1:] / joint[:, 0, 1:].sum(1, keepdims=True))
    without = token_map(joint, has_class_token=False)
    np.testing.assert_allclose(without, joint.mean(axis=1))
    np.testing.assert_allclose(with_cls.sum(1), 1.0)
    np.testing.assert_allclose(without.sum(1), 1.0)


def test_hybrid_v3_rollout_is_image_sized(tmp_path):
    pytest.importorskip("keras")
    from ml.bundle import load_bundle, make_random_bundle
    from ml.explain import explain_image
    from ml.explain.attention import attention_rollout
    from ml.explain.gradcam import compute_cam
    from ml.models.hybrid_v3 import attention_grid

    bundle = load_bundle(make_random_bundle(tmp_path, "v3", "hybrid_v3"))
    names = bundle.manifest.attention_layers
    assert names == ["transformer1", "transformer2"]
    images = np.random.default_rng(2).random((2, 64, 64, 1)).astype(np.float32)
    res = attention_rollout(bundle.model, images, names)
    assert res.has_class_token and res.grid == attention_grid(bundle.model)
    t = res.grid[0] * res.grid[1]
    assert res.joint.shape == (2, t + 1, t + 1)
    np.testing.assert_allclose(res.joint.sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(res.token_weights.sum(axis=1), 1.0, atol=1e-6)
    assert res.heatmaps.shape == (2, 64, 64)
    assert np.isfinite(res.heatmaps).all() and res.heatmaps.max() == pytest.approx(1.0)
    assert res.heatmaps.min() >= 0.0
    # Same attention found without the manifest's names; blank image stays finite.
    again = attention_rollout(bundle.model, np.zeros((1, 64, 64, 1), np.float32))
    assert again.layers == names and np.isfinite(again.heatmaps).all()
    out = explain_image(bundle, images[0, ..., 0], method="attention", faithfulness=False)
    assert out["layer"] == names and out["score_kind"] == "attention_rollout"
    assert out["arrays"]["heatmap"].shape == (64, 64)
    # Grad-CAM also reaches the Transformer's tokens (class token dropped, grid restored).
    cam = compute_cam(bundle.model, images, "transformer2", "stage_output")
    assert cam.heatmaps.shape == (2, 64, 64) and np.isfinite(cam.heatmaps).all()
