"""Evaluation metrics over whole splits: classification reports and per-image segmentation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ml.metrics import dice_per_image, iou_per_image, pooled_iou_dice


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def head_report(y_true: np.ndarray, proba: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, macro and weighted averages, confusion matrix.

    ROC AUC: binary heads score the positive class; multi-class heads give one-vs-rest macro AUC.
    AUC is None when the split holds a single class.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(names)
    y_pred = proba.argmax(axis=1) if len(proba) else np.zeros(0, int)
    labels = list(range(k))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        names[i]: {
            "precision": _r(p[i]),
            "recall": _r(r[i]),
            "f1": _r(f[i]),
            "support": int(s[i]),
        }
        for i in labels
    }

    # Averages run over the classes that occur (as truth or prediction), as scikit-learn's
    # report does; a class absent from both would only drag the macro average to zero.
    seen = [int(c) for c in np.union1d(y_true, y_pred)]

    def avg(kind: str) -> dict[str, Any]:
        ap, ar, af, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=seen, average=kind, zero_division=0
        )
        return {"precision": _r(ap), "recall": _r(ar), "f1": _r(af)}

    present = np.unique(y_true)
    auc: float | None = None
    if len(present) > 1:
        if k == 2:
            auc = roc_auc_score(y_true, proba[:, 1])
        else:
            # One-vs-rest over the classes present, each scored by its own probability.
            aucs = [roc_auc_score(y_true == c, proba[:, c]) for c in present]
            auc = float(np.mean(aucs))
    return {
        "accuracy": _r(float(np.mean(y_pred == y_true)) if len(y_true) else None),
        "roc_auc": _r(auc),
        "per_class": per_class,
        "macro_avg": avg("macro"),
        "weighted_avg": avg("weighted"),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": list(names),
    }


def classification_metrics(
    as_status: np.ndarray,
    stage: np.ndarray,
    p_status: np.ndarray,
    p_stage: np.ndarray,
    sources: np.ndarray | None = None,
    status_names: list[str] | None = None,
    stage_names: list[str] | None = None,
) -> dict[str, Any]:
    """Both heads' reports plus headline numbers and per-source accuracy."""
    from ml.vocab import AS_STATUS_NAMES, STAGE_NAMES

    binary = head_report(as_status, p_status, status_names or list(AS_STATUS_NAMES))
    staged = head_report(stage, p_stage, stage_names or list(STAGE_NAMES))
    out: dict[str, Any] = {
        "n": int(len(as_status)),
        "binary_accuracy": binary["accuracy"],
        "binary_roc_auc": binary["roc_auc"],
        "binary_macro_f1": binary["macro_avg"]["f1"],
        "stage_accuracy": staged["accuracy"],
        "stage_macro_f1": staged["macro_avg"]["f1"],
        "stage_weighted_f1": staged["weighted_avg"]["f1"],
        "early_recall": staged["per_class"][staged["labels"][1]]["recall"],
        "binary": binary,
        "stage": staged,
    }
    if sources is not None and len(sources):
        per = {}
        for src in sorted(set(np.asarray(sources).tolist())):
            sel = np.asarray(sources) == src
            per[src] = {
                "n": int(sel.sum()),
                "binary_accuracy": _r(np.mean(p_status[sel].argmax(1) == as_status[sel])),
                "stage_accuracy": _r(np.mean(p_stage[sel].argmax(1) == stage[sel])),
            }
        out["per_source"] = per
    return out


def segmentation_metrics(
    masks: np.ndarray,
    prob: np.ndarray,
    sources: np.ndarray | None = None,
    threshold: float = 0.5,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Mean per-image IoU/Dice (the headline), pooled IoU/Dice, and the same per source.

    Returns:
        ``(summary, per_image)`` where ``per_image`` holds the (N,) ``iou`` and ``dice`` arrays.
    """
    target = np.asarray(masks)
    target = target[..., 0] if target.ndim == 4 else target
    iou = iou_per_image(prob, target, threshold)
    dice = dice_per_image(prob, target, threshold)
    pooled_iou, pooled_dice = pooled_iou_dice(prob, target, threshold)
    out: dict[str, Any] = {
        "n": int(len(iou)),
        "threshold": threshold,
        "iou": _r(iou.mean() if len(iou) else None),
        "dice": _r(dice.mean() if len(dice) else None),
        "iou_median": _r(np.median(iou) if len(iou) else None),
        "iou_pooled": _r(pooled_iou),
        "dice_pooled": _r(pooled_dice),
    }
    if sources is not None and len(sources):
        src_arr = np.asarray(sources)
        out["per_source"] = {
            src: {
                "n": int((src_arr == src).sum()),
                "iou": _r(iou[src_arr == src].mean()),
                "dice": _r(dice[src_arr == src].mean()),
            }
            for src in sorted(set(src_arr.tolist()))
        }
    return out, {"iou": iou, "dice": dice}


HEADLINE = {
    "classification": ("binary_accuracy", "stage_accuracy", "stage_macro_f1", "early_recall"),
    "segmentation": ("iou", "dice"),
}


def max_headline_change(a: dict[str, Any], b: dict[str, Any], task: str) -> float:
    """Largest absolute difference between two metric dicts' headline numbers."""
    diffs = [
        abs(float(a[k]) - float(b[k]))
        for k in HEADLINE[task]
        if a.get(k) is not None and b.get(k) is not None
    ]
    return max(diffs, default=0.0)


def bootstrap_ci(
    values: Sequence[float],
    groups: Sequence[str] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling whole groups (subjects).

    Each resample draws as many groups as there are, with replacement, and averages every
    value of the drawn groups. One group (or one value) gives a zero-width interval.

    Args:
        values: one value per slice.
        groups: the slice's group (subject id); ``None`` = every slice its own group.
        n_boot: resamples.
        level: coverage of the interval.
        seed: resampling seed (results are reproducible).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (math.nan, math.nan)
    keys = list(groups) if groups is not None else [str(i) for i in range(v.size)]
    names = sorted(set(keys))
    index = {g: k for k, g in enumerate(names)}
    member = np.array([index[g] for g in keys])
    sums = np.bincount(member, weights=v, minlength=len(names))
    counts = np.bincount(member, minlength=len(names)).astype(np.float64)
    if len(names) == 1:
        mean = float(v.mean())
        return (mean, mean)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(n_boot, len(names)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return (float(low), float(high))
