"""Segmentation metrics: Keras metrics for training (keras.ops) and NumPy per-image scores.

Convention: an image whose target and prediction are both empty scores 1.0 (nothing to find,
nothing found); one empty and one not scores 0.0.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def _binarize(x, threshold: float):
    return (np.asarray(x) >= threshold).astype(bool)


def _flat(x) -> np.ndarray:
    arr = np.asarray(x)
    return arr.reshape(arr.shape[0], -1)


def iou_per_image(pred, target, threshold: float = 0.5) -> np.ndarray:
    """IoU of each image's thresholded prediction against its binary target, (N,) float64."""
    p, t = _flat(_binarize(pred, threshold)), _flat(_binarize(target, 0.5))
    inter = np.logical_and(p, t).sum(1)
    union = np.logical_or(p, t).sum(1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def dice_per_image(pred, target, threshold: float = 0.5) -> np.ndarray:
    """Dice of each image's thresholded prediction against its binary target, (N,) float64."""
    p, t = _flat(_binarize(pred, threshold)), _flat(_binarize(target, 0.5))
    inter = np.logical_and(p, t).sum(1)
    total = p.sum(1) + t.sum(1)
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))


def pooled_iou_dice(pred, target, threshold: float = 0.5) -> tuple[float, float]:
    """IoU and Dice over all pixels of all images together."""
    p, t = _binarize(pred, threshold), _binarize(target, 0.5)
    inter = float(np.logical_and(p, t).sum())
    union = float(np.logical_or(p, t).sum())
    total = float(p.sum() + t.sum())
    return (1.0 if union == 0 else inter / union), (1.0 if total == 0 else 2 * inter / total)


class _PerImageScore(keras.metrics.Metric):
    """Mean over images of a thresholded overlap score."""

    def __init__(self, threshold: float = 0.5, name: str = "score", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.total = self.add_variable((), initializer="zeros", name="total")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def _score(self, inter, p_sum, t_sum):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        p = ops.cast(y_pred >= self.threshold, "float32")
        t = ops.cast(ops.cast(y_true, "float32") >= 0.5, "float32")
        axes = list(range(1, len(p.shape)))
        inter = ops.sum(p * t, axis=axes)
        scores = self._score(inter, ops.sum(p, axis=axes), ops.sum(t, axis=axes))
        self.total.assign_add(ops.sum(scores))
        self.count.assign_add(ops.cast(ops.shape(scores)[0], "float32"))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="spondyscan")
class DiceScore(_PerImageScore):
    """Mean per-image Dice at a threshold (empty/empty = 1)."""

    def __init__(self, threshold: float = 0.5, name: str = "dice", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)

    def _score(self, inter, p_sum, t_sum):
        total = p_sum + t_sum
        return ops.where(total > 0, 2.0 * inter / ops.maximum(total, 1.0), 1.0)


@keras.saving.register_keras_serializable(package="spondyscan")
class IoUScore(_PerImageScore):
    """Mean per-image IoU at a threshold (empty/empty = 1)."""

    def __init__(self, threshold: float = 0.5, name: str = "iou", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)

    def _score(self, inter, p_sum, t_sum):
        union = p_sum + t_sum - inter
        return ops.where(union > 0, inter / ops.maximum(union, 1.0), 1.0)
