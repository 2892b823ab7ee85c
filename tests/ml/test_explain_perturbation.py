"""Occlusion, RISE and integrated gradients find the region a model reads, and reach the
service through compute_cam like the Grad-CAM family."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ml.explain.perturbation import integrated_gradients, occlusion, rise, rise_masks

SIZE = 64
REGION = (slice(8, 24), slice(40, 56))  # the only pixels the toy model reads


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.uniform(0.2, 0.4, (SIZE, SIZE)).astype(np.float32)
    img[REGION] = 0.9
    return img


def _predict(images: np.ndarray) -> np.ndarray:
    """P(class 1) rises with the brightness of REGION alone."""
    x = np.asarray(images)[..., 0]
    region = x[:, REGION[0], REGION[1]].mean(axis=(1, 2))
    p1 = 1.0 / (1.0 + np.exp(-12.0 * (region - 0.5)))
    return np.stack([1.0 - p1, p1], axis=1)


def _gradient(images: np.ndarray, class_index: int) -> np.ndarray:
    p = _predict(images)[:, 1]
    sign = 1.0 if class_index == 1 else -1.0
    grads = np.zeros_like(np.asarray(images, dtype=np.float64))
    area = (REGION[0].stop - REGION[0].start) * (REGION[1].stop - REGION[1].start)
    grads[:, REGION[0], REGION[1], 0] = (sign * 12.0 * p * (1 - p) / area)[:, None, None]
    return grads


def _inside(saliency: np.ndarray) -> float:
    return float(saliency[REGION].sum() / max(saliency.sum(), 1e-9))


@pytest.mark.parametrize("method", ["occlusion", "rise", "ig"])
def test_maps_find_the_region_the_model_reads(method: str) -> None:
    img = _image()
    if method == "occlusion":
        sal = occlusion(_predict, img, 1, patch=16, stride=8)
    elif method == "rise":
        sal = rise(_predict, img, 1, n_masks=256, cells=6)
    else:
        sal = integrated_gradients(_gradient, img, 1, steps=16, smooth=0.0)
    assert sal.shape == (SIZE, SIZE) and sal.dtype == np.float32
    assert sal.min() >= 0.0 and sal.max() == pytest.approx(1.0)
    region_share = (16 * 16) / SIZE**2  # 6 % of the image
    assert _inside(sal) > 4 * region_share, _inside(sal)


def test_a_model_that_ignores_the_image_gives_an_empty_map() -> None:
    def flat(images: np.ndarray) -> np.ndarray:
        return np.tile([0.3, 0.7], (len(images), 1))

    assert not occlusion(flat, _image(), 1, patch=16, stride=16).any()
    assert not rise(flat, _image(), 1, n_masks=32).any()


def test_rise_masks_keep_about_the_asked_share() -> None:
    masks = rise_masks(64, 96, cells=8, keep=0.5, seed=3)
    assert masks.shape == (64, 96, 96) and 0.4 < float(masks.mean()) < 0.6


@pytest.mark.parametrize("method", ["occlusion", "rise", "integrated_gradients"])
def test_compute_cam_runs_the_input_side_methods(method: str) -> None:
    import keras

    from ml.explain.gradcam import compute_cam
    from ml.models import build_model, spec

    keras.utils.set_random_seed(0)
    model = build_model("simple_cnn", dict(spec("simple_cnn").tiny))
    images = np.random.default_rng(1).random((2, *model.inputs[0].shape[1:])).astype(np.float32)
    res = compute_cam(model, images, None, "binary_output", None, method)
    assert res.heatmaps.shape == images.shape[:3] and res.layer == "input"
    assert np.allclose(res.probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert list(res.class_index) == list(res.probabilities.argmax(axis=1))
    if method == "integrated_gradients":
        return
    # Forward passes spread over shares (as the service does, one per core) give the same map.
    calls: list[int] = []

    def halves(fn: Any, batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        cut = len(batch) // 2
        return np.concatenate([fn(batch[:cut]), fn(batch[cut:])]) if cut else fn(batch)

    spread = compute_cam(model, images, None, "binary_output", None, method, halves)
    assert len(calls) > 2, "the perturbed images' passes did not go through spread"
    assert np.allclose(spread.heatmaps, res.heatmaps, atol=1e-5)
    assert list(spread.class_index) == list(res.class_index)


def test_input_gradients_of_both_heads_share_one_trace() -> None:
    """One compiled gradient function per model serves both heads, each head's gradient the
    one a tape gives for that head's class probability."""
    import keras
    import tensorflow as tf

    from ml.explain.cam_graph import _CACHE
    from ml.explain.input_gradients import make_gradient_fn
    from ml.models import build_model, spec

    keras.utils.set_random_seed(0)
    model = build_model("simple_cnn", dict(spec("simple_cnn").tiny))
    images = np.random.default_rng(2).random((2, *model.inputs[0].shape[1:])).astype(np.float32)
    for index, head in enumerate(["binary_output", "stage_output"]):
        for class_index in (0, 1):
            got = make_gradient_fn(model, head)(images, class_index)
            x = tf.constant(images)
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = keras.tree.flatten(model(x, training=False))[index]
                score = tf.gather(out, class_index, axis=1)
            want = tape.gradient(score, x).numpy()
            assert np.abs(want).max() > 0
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    compiled = _CACHE[model][("input-gradient",)]
    assert compiled.experimental_get_tracing_count() == 1
