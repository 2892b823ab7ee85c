"""Explanations by perturbation and by path integration, beside the Grad-CAM family.

* **Occlusion sensitivity** (Zeiler & Fergus, 2014): slide a patch of the baseline (the blurred
  image) over the image; a pixel's saliency is the mean drop of the class probability over the
  patches that covered it.
* **RISE** (Petsiuk et al., 2018): many random coarse masks, upsampled with random shifts; the
  saliency is the probability-weighted average of the masks that kept each pixel.
* **Integrated gradients** (Sundararajan et al., 2017): the gradient of the class score along
  the straight path from the baseline to the image, times (image - baseline).

Pure functions over arrays: the model enters as ``predict(images (N,S,S,1)) -> probabilities
(N,K)`` (and ``gradient(images, class) -> (N,S,S,1)`` for integrated gradients), so the same
code serves the CLI, the API's runner and the tests. Every map comes back as (S, S) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from ml.explain.faithfulness import make_baseline

Predict = Callable[[np.ndarray], np.ndarray]
Gradient = Callable[[np.ndarray, int], np.ndarray]
_EPS = 1e-12
# Saliency below this (in probability units) is rounding noise, not evidence: the map is empty.
NOISE_FLOOR = 1e-6


def _normalise(saliency: np.ndarray, floor: float = NOISE_FLOOR) -> np.ndarray:
    s = np.clip(np.nan_to_num(np.asarray(saliency, dtype=np.float64)), 0.0, None)
    top = float(s.max())
    return (s / top if top > floor else np.zeros_like(s)).astype(np.float32)


def _batched(predict: Predict, images: np.ndarray, max_batch: int) -> np.ndarray:
    out = [predict(images[i : i + max_batch]) for i in range(0, len(images), max_batch)]
    return np.concatenate(out, axis=0)


def occlusion(
    predict: Predict,
    image: np.ndarray,
    class_index: int,
    *,
    patch: int = 48,
    stride: int = 32,
    max_batch: int = 32,
) -> np.ndarray:
    """Occlusion sensitivity of one (S, S) image for ``class_index``.

    Args:
        predict: probabilities of a batch (N, S, S, 1) -> (N, K).
        image: (S, S) float in [0, 1].
        class_index: the class whose probability drop is measured.
        patch: side of the occluding square (pixels).
        stride: step between patch positions (pixels).
        max_batch: images per ``predict`` call.
    """
    img = np.asarray(image, dtype=np.float32)
    size = img.shape[0]
    base = make_baseline(img)
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    boxes = [(y, x) for y in starts for x in starts]
    batch = np.repeat(img[None], len(boxes) + 1, axis=0)
    for k, (y, x) in enumerate(boxes, start=1):
        batch[k, y : y + patch, x : x + patch] = base[y : y + patch, x : x + patch]
    probs = _batched(predict, batch[..., None], max_batch)[:, class_index]
    drop = probs[0] - probs[1:]
    total = np.zeros(img.shape, np.float64)
    count = np.zeros(img.shape, np.float64)
    for d, (y, x) in zip(drop, boxes, strict=True):
        total[y : y + patch, x : x + patch] += d
        count[y : y + patch, x : x + patch] += 1.0
    return _normalise(total / np.maximum(count, 1.0))


def rise_masks(n: int, size: int, cells: int = 8, keep: float = 0.5, seed: int = 0) -> np.ndarray:
    """``n`` RISE masks (n, size, size) in [0, 1]: random ``cells`` x ``cells`` grids, bilinearly
    upsampled to one cell larger than the image and cropped at a random shift."""
    rng = np.random.default_rng(seed)
    cell = int(np.ceil(size / cells))
    up = (cells + 1) * cell
    grids = (rng.random((n, cells, cells)) < keep).astype(np.float32)
    masks = np.empty((n, size, size), np.float32)
    for i in range(n):
        big = cv2.resize(grids[i], (up, up), interpolation=cv2.INTER_LINEAR)
        dy, dx = rng.integers(0, cell, 2)
        masks[i] = big[dy : dy + size, dx : dx + size]
    return masks


def rise(
    predict: Predict,
    image: np.ndarray,
    class_index: int,
    *,
    n_masks: int = 96,
    cells: int = 8,
    keep: float = 0.5,
    seed: int = 0,
    max_batch: int = 32,
) -> np.ndarray:
    """RISE saliency of one (S, S) image: masked pixels are replaced by the blurred baseline."""
    img = np.asarray(image, dtype=np.float32)
    base = make_baseline(img)
    masks = rise_masks(n_masks, img.shape[0], cells, keep, seed)
    batch = masks * img[None] + (1.0 - masks) * base[None]
    probs = _batched(predict, batch[..., None], max_batch)[:, class_index]
    # The probability-weighted share of the masks that kept each pixel (dividing by each pixel's
    # own coverage rather than the expected one removes the masks' uneven density), minus its
    # mean: a model that ignores the image gives an empty map.
    coverage = np.maximum(masks.sum(axis=0), _EPS)
    saliency = np.tensordot(probs, masks, axes=(0, 0)) / coverage
    return _normalise(saliency - float(saliency.mean()))


def integrated_gradients(
    gradient: Gradient,
    image: np.ndarray,
    class_index: int,
    *,
    steps: int = 16,
    max_batch: int = 16,
    smooth: float = 2.0,
) -> np.ndarray:
    """Integrated gradients of one (S, S) image from the blurred baseline (Riemann midpoints);
    the absolute attribution, lightly smoothed (``smooth`` = Gaussian sigma in pixels)."""
    img = np.asarray(image, dtype=np.float32)
    base = make_baseline(img)
    alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps
    path = base[None] + alphas[:, None, None] * (img - base)[None]
    grads = np.concatenate(
        [
            np.asarray(gradient(path[i : i + max_batch][..., None], class_index))
            for i in range(0, steps, max_batch)
        ],
        axis=0,
    )[..., 0]
    attribution = np.abs(grads.mean(axis=0) * (img - base))
    if smooth > 0:
        attribution = cv2.GaussianBlur(attribution.astype(np.float32), (0, 0), smooth)
    # Per-pixel attributions share the probability change among all pixels: they are small, and
    # only their total says whether there is anything to show.
    if float(attribution.sum()) <= NOISE_FLOOR:
        return np.zeros(img.shape, np.float32)
    return _normalise(attribution, floor=0.0)
