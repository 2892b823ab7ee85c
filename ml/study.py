"""Study-level reasoning over per-slice results: which slices show the lumbosacral region, and
one answer per model with its spread along the series. Pure functions over arrays.

Key slices mirror how the training slices were chosen: the slices whose segmented area is at
least half the largest, and of those at most ``limit`` around the area-weighted centre of the
series (the midline, where the vertebral bodies are cut widest).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

KEY_FRACTION = 0.5
KEY_LIMIT = 9
# The intensity window of a series, as the training slices were scaled (per volume).
WINDOW_PERCENTILES = (0.5, 99.8)


def series_window(slices: list[np.ndarray], sample: int = 200_000) -> tuple[float, float]:
    """The (low, high) intensity window of a whole series, from an even sample of its pixels.

    Every slice of a study is scaled with the same window, so a slice's brightness relative to
    its neighbours is kept (a per-slice window would stretch a dark lateral slice).
    """
    total = sum(s.size for s in slices)
    step = max(1, total // sample)
    values = np.concatenate([np.asarray(s, dtype=np.float32).ravel()[::step] for s in slices])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, WINDOW_PERCENTILES))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return lo, hi if hi > lo else lo + 1.0


def display_slices(raw: list[np.ndarray | None], size: int = 256) -> list[np.ndarray | None]:
    """Each slice as the models see it: the series scaled to 8 bits as one
    (:func:`series_window`), then each slice through :func:`ml.preprocessing.preprocess`.
    Unreadable slices (None) stay None."""
    from ml.preprocessing import preprocess

    good = [r for r in raw if r is not None]
    if not good:
        return [None] * len(raw)
    lo, hi = series_window(good)
    out: list[np.ndarray | None] = []
    for r in raw:
        if r is None:
            out.append(None)
            continue
        u8 = np.rint((np.clip(r, lo, hi) - lo) / (hi - lo) * 255.0).astype(np.uint8)
        out.append(preprocess(u8, size))
    return out


def key_slices(
    areas: np.ndarray, fraction: float = KEY_FRACTION, limit: int = KEY_LIMIT
) -> list[int]:
    """Indices of the key slices, in series order; empty when nothing was segmented.

    Args:
        areas: segmented area (pixels or fraction) of each slice, in series order.
        fraction: a slice counts when its area is at least this share of the largest.
        limit: the most slices kept (those nearest the area-weighted centre).
    """
    a = np.asarray(areas, dtype=np.float64)
    if a.size == 0 or float(a.max()) <= 0:
        return []
    candidates = np.flatnonzero(a >= fraction * a.max())
    centre = float(np.sum(np.arange(a.size) * a) / np.sum(a))
    if candidates.size > limit:
        nearest = np.argsort(np.abs(candidates - centre), kind="stable")[:limit]
        candidates = candidates[nearest]
    return sorted(int(i) for i in candidates)


def to_grid(prob: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A probability map resized (bilinear) to the input slice's rows and columns."""
    p = np.asarray(prob, dtype=np.float32)
    if p.shape == (rows, cols):
        return p
    return cv2.resize(p, (cols, rows), interpolation=cv2.INTER_LINEAR)


def aggregate(
    p_status: np.ndarray,
    p_stage: np.ndarray,
    status_names: list[str],
    stage_names: list[str],
) -> dict[str, Any]:
    """One model's study-level answer from its key-slice probabilities.

    Args:
        p_status: (K, 2) AS-status probabilities of the K key slices.
        p_stage: (K, 4) stage probabilities.
        status_names: AS-status class names (negative first).
        stage_names: stage names by severity.

    Returns:
        The study's AS status and stage (argmax of the mean probabilities), the mean and
        maximum probability of AS positive, and the share of key slices whose own answer
        agrees with the study's (``agreement``).
    """
    ps = np.asarray(p_status, dtype=np.float64).reshape(-1, len(status_names))
    pg = np.asarray(p_stage, dtype=np.float64).reshape(-1, len(stage_names))
    mean_s, mean_g = ps.mean(axis=0), pg.mean(axis=0)
    si, gi = int(np.argmax(mean_s)), int(np.argmax(mean_g))
    positive = (
        status_names.index("positive") if "positive" in status_names else len(status_names) - 1
    )
    return {
        "as_status": status_names[si],
        "as_probability": float(mean_s[si]),
        "as_probabilities": {n: float(v) for n, v in zip(status_names, mean_s, strict=True)},
        "p_positive_mean": float(ps[:, positive].mean()),
        "p_positive_max": float(ps[:, positive].max()),
        "stage": stage_names[gi],
        "stage_probability": float(mean_g[gi]),
        "stage_probabilities": {n: float(v) for n, v in zip(stage_names, mean_g, strict=True)},
        "status_agreement": float(np.mean(np.argmax(ps, axis=1) == si)),
        "stage_agreement": float(np.mean(np.argmax(pg, axis=1) == gi)),
        "slices": int(ps.shape[0]),
    }
