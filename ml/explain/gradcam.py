"""Class activation maps (Grad-CAM, Grad-CAM++, Eigen-CAM) for any model, head and class.

One compiled function per (model, layer) computes the head's probabilities, the target layer's
activations and the gradients of the explained score with respect to them, for a whole batch, in
a single forward and backward pass; that framework plumbing (finding layers and heads, tracing,
caching, and which score is differentiated) lives in :mod:`ml.explain.cam_graph`. This module is
the CAM arithmetic afterwards, plain NumPy, and the :func:`compute_cam` entry point.

Scores explained (details in :mod:`ml.explain.cam_graph`): the class log-odds for classification
heads (the class probability when the logits cannot be reached), the mean foreground (class 1)
or background (class 0) probability for segmentation heads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# The plumbing is re-exported here: callers import these names from ml.explain.gradcam.
from ml.explain.cam_graph import (
    SEGMENTATION_HEAD_ALIASES,
    HeadCamFn,
    find_last_conv_layer,
    find_layer_path,
    make_cam_fn,
    output_names,
    resolve_head,
    run_with_capture,
)
from ml.explain.cam_graph import _cached as _cached
from ml.explain.cam_graph import _signature as _signature
from ml.vocab import GRADCAM_METHODS, PERTURBATION_METHODS

log = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "SEGMENTATION_HEAD_ALIASES",
    "CamResult",
    "HeadCamFn",
    "cam_from_arrays",
    "compute_cam",
    "find_last_conv_layer",
    "find_layer_path",
    "gradcam",
    "make_cam_fn",
    "normalize_maps",
    "output_names",
    "resolve_head",
    "run_with_capture",
]

METHODS = GRADCAM_METHODS + PERTURBATION_METHODS
_EPS = 1e-12


@dataclass
class CamResult:
    """Everything one batched CAM computation produces.

    Attributes:
        heatmaps: (N, H, W) float32 in [0, 1], image-sized.
        class_index: (N,) int, the class explained (1 = foreground for segmentation heads).
        prob: (N,) float, the explained class probability (mean foreground for segmenters).
        probabilities: (N, K) head probabilities ((N, 2) [background, foreground] for segmenters).
        head: output name explained.
        layer: target layer name.
        method: CAM method.
        score_kind: "log_odds", "probability" or "mean_foreground_probability".
        task: "classification" or "segmentation".
        output: the head's raw output ((N, S, S, 1) probability map for segmenters).
        head_probabilities: every head's (N, K_i) probabilities in the model's output order
            (the Grad-CAM family's pass computes them all; None for the input-side methods).
    """

    heatmaps: np.ndarray
    class_index: np.ndarray
    prob: np.ndarray
    probabilities: np.ndarray
    head: str
    layer: str
    method: str
    score_kind: str
    task: str
    output: np.ndarray | None = None
    head_probabilities: list[np.ndarray] | None = None


# --------------------------------------------------------------------------- CAM arithmetic


# ``spread(fn, images) -> rows``: fn over shares of images at once, rows in order.
Spread = Callable[[Callable[[np.ndarray], np.ndarray], np.ndarray], np.ndarray]


def _as_grid(arr: np.ndarray) -> np.ndarray:
    """(N, h, w, C) feature maps; token sequences (N, T, D) become a square grid (CLS dropped)."""
    if arr.ndim == 4:
        return arr
    if arr.ndim == 3:
        n, t, d = arr.shape
        for drop in (0, 1):
            g = int(round(np.sqrt(t - drop)))
            if g * g == t - drop:
                return arr[:, drop:, :].reshape(n, g, g, d)
    raise ValueError(f"cannot map target layer output of shape {arr.shape} onto the image")


def _gradcam_weights(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    return grads.mean(axis=(1, 2))


def _gradcampp_weights(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    # Closed form of Chattopadhay et al. for an exponential score: higher derivatives are
    # powers of the first, so one backward pass is enough.
    g2 = grads**2
    g3 = g2 * grads
    sum_acts = acts.sum(axis=(1, 2), keepdims=True)
    denom = 2.0 * g2 + sum_acts * g3
    alpha = np.where(np.abs(denom) > _EPS, g2 / np.where(np.abs(denom) > _EPS, denom, 1.0), 0.0)
    return (alpha * np.maximum(grads, 0.0)).sum(axis=(1, 2))


def _eigencam(acts: np.ndarray) -> np.ndarray:
    """First principal component of the (h*w, C) activations, sign set by activation energy."""
    n, h, w, c = acts.shape
    a = acts.reshape(n, h * w, c).astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    if h * w <= c:
        gram = a @ a.transpose(0, 2, 1)
        vals, vecs = np.linalg.eigh(gram)
        proj = vecs[:, :, -1] * np.sqrt(np.maximum(vals[:, -1:], 0.0))
    else:
        cov = a.transpose(0, 2, 1) @ a
        _, vecs = np.linalg.eigh(cov)
        proj = np.einsum("npc,nc->np", a, vecs[:, :, -1])
    # An eigenvector's sign is arbitrary: point it towards where the layer is most active.
    energy = acts.reshape(n, h * w, c).sum(axis=2)
    energy = energy - energy.mean(axis=1, keepdims=True)
    sign = np.where((proj * energy).sum(axis=1) < 0, -1.0, 1.0)
    return (proj * sign[:, None]).reshape(n, h, w)


def normalize_maps(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """ReLU, resize bilinearly to ``size`` (H, W), divide by the maximum: (N, H, W) in [0, 1].

    Resizing before dividing (the design divides first) keeps the peak of the image-sized map
    at exactly 1: bilinear resizing with half-pixel centres shaves the coarse peak. A map that
    is zero (or not finite) everywhere, e.g. from all-zero gradients on a blank image, becomes
    an all-zero map rather than NaN.
    """
    cams = np.nan_to_num(np.asarray(cams, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    cams = np.maximum(cams, 0.0)
    out = np.zeros((cams.shape[0], *size), dtype=np.float32)
    for i, cam in enumerate(cams):
        if cam.size == 0 or float(cam.max()) <= _EPS:
            continue
        cam = (cam / cam.max()).astype(np.float32)  # scale first so float32 cannot overflow
        if cam.shape != tuple(size):
            cam = cv2.resize(cam, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        cam = np.maximum(cam, 0.0)
        peak = float(cam.max())
        if peak > _EPS:
            out[i] = np.clip(cam / peak, 0.0, 1.0)
    return out


def cam_from_arrays(acts: np.ndarray, grads: np.ndarray | None, method: str) -> np.ndarray:
    """Raw (N, h, w) CAMs (before ReLU/normalisation) from activations and gradients."""
    acts = _as_grid(np.nan_to_num(np.asarray(acts, dtype=np.float64)))
    if method == "eigencam":
        return _eigencam(acts)
    if grads is None:
        raise ValueError(f"{method} needs gradients")
    grads = _as_grid(np.nan_to_num(np.asarray(grads, dtype=np.float64)))
    if method == "gradcam":
        weights = _gradcam_weights(acts, grads)
    elif method == "gradcam++":
        weights = _gradcampp_weights(acts, grads)
    else:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {METHODS}")
    return np.einsum("nhwc,nc->nhw", acts, weights)


def _as_batch(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None, ..., None]
    elif arr.ndim == 3:
        arr = arr[..., None] if arr.shape[-1] not in (1, 3) else arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected images (N, S, S, 1), got shape {np.shape(images)}")
    return arr


def _input_side(
    model: Any,
    batch: np.ndarray,
    head: str | None,
    class_index: Any,
    method: str,
    spread: Spread | None = None,
) -> CamResult:
    """Occlusion, RISE or integrated gradients, image by image (see ml.explain.perturbation).

    ``spread(fn, images)``, when given, runs ``fn`` over shares of ``images`` at once (e.g. one
    per core) and returns the rows in order; the perturbed images' forward passes use it."""
    from ml.explain import perturbation
    from ml.explain.faithfulness import make_forward_fn
    from ml.explain.input_gradients import make_gradient_fn

    _, head_name, task = resolve_head(model, head)
    forward = make_forward_fn(model, head_name)

    def one_call(images: np.ndarray) -> np.ndarray:
        return np.asarray(forward(np.asarray(images, np.float32)), dtype=np.float64)

    def predict(images: np.ndarray) -> np.ndarray:
        return one_call(images) if spread is None else spread(one_call, images)

    probabilities = predict(batch)
    n = batch.shape[0]
    wanted = np.broadcast_to(
        np.asarray(-1 if class_index is None else class_index, dtype=np.int64), (n,)
    )
    classes = np.where(wanted < 0, probabilities.argmax(axis=1), wanted)
    maps = []
    for image, ci in zip(batch[..., 0], classes, strict=True):
        if method == "occlusion":
            maps.append(perturbation.occlusion(predict, image, int(ci)))
        elif method == "rise":
            maps.append(perturbation.rise(predict, image, int(ci)))
        else:
            gradient = make_gradient_fn(model, head_name)
            maps.append(perturbation.integrated_gradients(gradient, image, int(ci)))
    return CamResult(
        heatmaps=np.stack(maps).astype(np.float32),
        class_index=classes.astype(np.int64),
        prob=probabilities[np.arange(n), classes],
        probabilities=probabilities,
        head=head_name,
        layer="input",
        method=method,
        score_kind="probability",
        task=task,
    )


def compute_cam(
    model: Any,
    images: np.ndarray,
    layer: str | None,
    head: str | None = "binary_output",
    class_index: int | np.ndarray | None = None,
    method: str = "gradcam",
    spread: Spread | None = None,
) -> CamResult:
    """Batched CAMs with everything that came out of the pass (see :class:`CamResult`).

    Args:
        model: a Keras model (classifier with named heads, or a segmenter).
        images: (N, S, S, 1) float32 in [0, 1] (a single (S, S) image is accepted).
        layer: target layer name (the manifest's ``gradcam_layer``); ``None`` = last 4D layer.
        head: output to explain (``binary_output``, ``stage_output``, aliases, or ``mask``).
        class_index: class to explain: one int for all, one per image, or ``None`` = predicted.
        method: ``gradcam``, ``gradcam++``, ``eigencam`` (gradient-free, class-agnostic), or
            an input-side method: ``occlusion``, ``rise``, ``integrated_gradients``.
        spread: for occlusion and RISE, runs their forward passes over shares of each batch
            at once (see :func:`_input_side`); None: one call per batch.
    """
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {METHODS}")
    batch = _as_batch(images)
    if method in PERTURBATION_METHODS:
        return _input_side(model, batch, head, class_index, method, spread)
    layer = layer or find_last_conv_layer(model)
    _, head_name, task = resolve_head(model, head)
    fn = make_cam_fn(model, layer, head_name, gradients=method != "eigencam")
    n = batch.shape[0]
    if class_index is None:
        ci = np.full((n,), -1, dtype=np.int32)
    else:
        ci = np.broadcast_to(np.asarray(class_index, dtype=np.int32), (n,)).copy()
    out = fn(batch, ci)
    acts = out["activations"].numpy()
    grads = out["gradients"].numpy() if method != "eigencam" else None
    raw = cam_from_arrays(acts, grads, method)
    heatmaps = normalize_maps(raw, batch.shape[1:3])
    return CamResult(
        heatmaps=heatmaps,
        class_index=out["class_index"].numpy().astype(np.int64),
        prob=out["prob"].numpy().astype(np.float64),
        probabilities=out["probabilities"].numpy().astype(np.float64),
        head=head_name,
        layer=layer,
        method=method,
        score_kind=fn.score_kind,
        task=task,
        output=out["output"].numpy() if task == "segmentation" else None,
        head_probabilities=[h.numpy().astype(np.float64) for h in out["head_probabilities"]],
    )


def gradcam(
    model: Any,
    images: np.ndarray,
    layer: str | None,
    head: str | None = "binary_output",
    class_index: int | np.ndarray | None = None,
    method: str = "gradcam",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmaps for a batch in one forward+backward pass.

    Returns:
        (heatmaps (N, S, S) float32 in [0, 1], class_index (N,), prob (N,) of that class).
    """
    res = compute_cam(model, images, layer, head, class_index, method)
    return res.heatmaps, res.class_index, res.prob
