"""Losses (keras.ops only, so they run on any Keras backend).

Segmentation: BCE, soft Dice, Dice + BCE (optionally with a boundary-aware term and a Lovász
term, a convex surrogate of each image's IoU).
Classification: sparse categorical cross-entropy with optional class weights and focal
modulation (``gamma > 0``), which targets the rare Early stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

EPSILON = 1e-7


def _per_image_dice(y_true, y_pred, smooth: float):
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = list(range(1, len(y_pred.shape)))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return (2.0 * intersection + smooth) / (total + smooth)


@keras.saving.register_keras_serializable(package="spondyscan")
class DiceLoss(keras.losses.Loss):
    """1 - soft Dice per image (smoothed so empty masks are not undefined)."""

    def __init__(self, smooth: float = 1.0, name: str = "dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        return 1.0 - _per_image_dice(y_true, y_pred, self.smooth)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


def boundary_band(y_true, width: int):
    """1 on pixels within about ``width // 2`` of the mask's edge (either side), else 0.

    Morphological gradient of the target by max pooling (dilation minus erosion), so it runs on
    any Keras backend. ``y_true``: (B, H, W, 1) in {0, 1}.
    """
    dilated = ops.max_pool(y_true, pool_size=width, strides=1, padding="same")
    eroded = -ops.max_pool(-y_true, pool_size=width, strides=1, padding="same")
    return dilated - eroded


def lovasz_per_image(y_true, y_pred):
    """Lovász extension of 1 - IoU per image, on the errors ``|y_true - y_pred|``.

    The binary Lovász-Softmax surrogate (Berman et al., CVPR 2018): each image's pixel errors
    sorted in decreasing order, weighted by the gradient of the Jaccard loss along that order.
    Equals 1 - IoU for a hard 0/1 prediction. Sorting uses ``keras.ops`` only; the weights are
    constants (no gradient flows through the order). ``y_true``, ``y_pred``: (B, H, W, 1).
    """
    y_true = ops.cast(y_true, y_pred.dtype)
    truth = ops.reshape(y_true, (ops.shape(y_true)[0], -1))
    errors = ops.abs(truth - ops.reshape(y_pred, (ops.shape(y_pred)[0], -1)))
    order = ops.argsort(-errors, axis=1)
    errors_sorted = ops.take_along_axis(errors, order, axis=1)
    truth_sorted = ops.take_along_axis(truth, order, axis=1)
    positives = ops.sum(truth_sorted, axis=1, keepdims=True)
    intersection = positives - ops.cumsum(truth_sorted, axis=1)
    union = positives + ops.cumsum(1.0 - truth_sorted, axis=1)
    jaccard = 1.0 - intersection / union
    weights = ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=1)
    return ops.sum(errors_sorted * ops.stop_gradient(weights), axis=1)


@keras.saving.register_keras_serializable(package="spondyscan")
class DiceBCELoss(keras.losses.Loss):
    """``bce_weight`` x mean pixel BCE + ``dice_weight`` x (1 - soft Dice), per image.

    With ``boundary_weight > 0`` a boundary-aware term is added: the mean BCE over the band of
    ``boundary_width`` pixels around the target's edges (:func:`boundary_band`), so errors at
    the vertebral outlines, which decide the IoU, weigh more than the easy interior and
    background. With ``lovasz_weight > 0``, ``lovasz_weight`` x :func:`lovasz_per_image` is
    added: a surrogate of the per-image IoU that the evaluation reports.
    """

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        boundary_weight: float = 0.0,
        boundary_width: int = 5,
        lovasz_weight: float = 0.0,
        name: str = "dice_bce_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)
        self.boundary_weight = float(boundary_weight)
        self.boundary_width = int(boundary_width)
        self.lovasz_weight = float(lovasz_weight)
        if self.boundary_width < 3 or self.boundary_width % 2 == 0:
            raise ValueError("boundary_width must be an odd number >= 3")

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        pixel_bce = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
        axes = list(range(1, len(y_pred.shape)))
        bce = ops.mean(pixel_bce, axis=axes)
        dice = 1.0 - _per_image_dice(y_true, y_pred, self.smooth)
        loss = self.bce_weight * bce + self.dice_weight * dice
        if self.boundary_weight:
            band = boundary_band(y_true, self.boundary_width)
            edge = ops.sum(band * pixel_bce, axis=axes) / (ops.sum(band, axis=axes) + 1.0)
            loss = loss + self.boundary_weight * edge
        if self.lovasz_weight:
            loss = loss + self.lovasz_weight * lovasz_per_image(y_true, y_pred)
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "bce_weight": self.bce_weight,
            "dice_weight": self.dice_weight,
            "smooth": self.smooth,
            "boundary_weight": self.boundary_weight,
            "boundary_width": self.boundary_width,
            "lovasz_weight": self.lovasz_weight,
        }


@keras.saving.register_keras_serializable(package="spondyscan")
class SparseFocalLoss(keras.losses.Loss):
    """Class-weighted focal loss on softmax probabilities with integer labels.

    ``-w[y] * (1 - p_y) ** gamma * log(p_y)``; ``gamma = 0`` is class-weighted cross-entropy and
    with no weights it is plain sparse categorical cross-entropy.

    Args:
        gamma: focusing parameter (2 is the usual choice).
        class_weights: one weight per class, or None for all ones.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        class_weights: Sequence[float] | None = None,
        name: str = "sparse_focal_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        classes = y_pred.shape[-1]
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        onehot = ops.one_hot(labels, classes, dtype=y_pred.dtype)
        p = ops.sum(ops.clip(y_pred, EPSILON, 1.0) * onehot, axis=-1)
        loss = -ops.log(p)
        if self.gamma:
            loss = loss * ops.power(1.0 - p, self.gamma)
        if self.class_weights is not None:
            weights = ops.convert_to_tensor(self.class_weights, dtype=y_pred.dtype)
            loss = loss * ops.sum(onehot * weights, axis=-1)
        return loss

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "class_weights": self.class_weights}


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> list[float]:
    """``n / (k * n_c)`` per class (1.0 for classes absent from ``labels``), mean-normalised
    over the samples so the loss keeps its scale."""
    labels = np.asarray(labels).astype(int).ravel()
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    weights /= float(np.mean(weights[labels])) if len(labels) else 1.0
    return [round(float(w), 6) for w in weights]


def get_loss(spec: Any, labels: np.ndarray | None = None, n_classes: int | None = None):
    """Build a loss from a config value.

    Args:
        spec: a name (``bce``, ``dice``, ``dice_bce``, ``sparse_ce``, ``focal``) or a dict with
            ``name`` and options (``gamma``, ``class_weights`` = list or ``balanced``,
            ``bce_weight``, ``dice_weight``, ``boundary_weight``, ``boundary_width``,
            ``lovasz_weight``).
        labels: training labels, needed for ``class_weights: balanced``.
        n_classes: number of classes of the head, for ``balanced``.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    name = spec.pop("name")
    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name == "dice":
        return DiceLoss(**spec)
    if name == "dice_bce":
        return DiceBCELoss(**spec)
    if name in ("sparse_ce", "focal"):
        weights = spec.pop("class_weights", None)
        if weights == "balanced":
            if labels is None or n_classes is None:
                raise ValueError("class_weights: balanced needs the training labels")
            weights = balanced_class_weights(labels, n_classes)
        gamma = float(spec.pop("gamma", 2.0 if name == "focal" else 0.0))
        if spec:
            raise ValueError(f"unknown options for loss {name}: {sorted(spec)}")
        if name == "sparse_ce" and weights is None:
            return keras.losses.SparseCategoricalCrossentropy(name="sparse_ce")
        return SparseFocalLoss(gamma=gamma, class_weights=weights)
    raise ValueError(f"unknown loss {name!r} (bce, dice, dice_bce, sparse_ce, focal)")
