"""Segmentation explanation: the mask, its per-pixel probability map, a confidence summary."""

from __future__ import annotations

from typing import Any

import numpy as np

UNCERTAIN_RANGE = (0.3, 0.7)


def confidence_summary(
    prob: np.ndarray, threshold: float = 0.5, uncertain: tuple[float, float] = UNCERTAIN_RANGE
) -> dict[str, Any]:
    """How sure the segmenter is about one mask.

    Args:
        prob: (H, W) foreground probabilities in [0, 1].
        threshold: mask threshold (the manifest's ``outputs.mask.threshold``).
        uncertain: probabilities in this closed range count as uncertain.

    Returns:
        dict with ``area_pixels``, ``area_fraction`` (of the image), ``mean_prob_inside`` (mean
        probability over the mask, None when empty), ``mean_prob_outside``,
        ``uncertain_fraction`` (share of all pixels in the uncertain range),
        ``uncertain_to_area`` (uncertain pixels per mask pixel, None when empty),
        ``threshold`` and ``uncertain_range``.
    """
    p = np.clip(np.nan_to_num(np.asarray(prob, dtype=np.float64)), 0.0, 1.0)
    if p.ndim == 3:
        p = p[..., 0]
    mask = p >= threshold
    area = int(mask.sum())
    n_unc = int(((p >= uncertain[0]) & (p <= uncertain[1])).sum())
    return {
        "area_pixels": area,
        "area_fraction": float(area / p.size) if p.size else 0.0,
        "mean_prob_inside": float(p[mask].mean()) if area else None,
        "mean_prob_outside": float(p[~mask].mean()) if area < p.size else None,
        "uncertain_fraction": float(n_unc / p.size) if p.size else 0.0,
        "uncertain_to_area": float(n_unc / area) if area else None,
        "threshold": float(threshold),
        "uncertain_range": [float(uncertain[0]), float(uncertain[1])],
    }


def explain_segmentation(prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Mask (uint8 {0, 1}), probability map (float32) and confidence summary for one image."""
    p = np.clip(np.nan_to_num(np.asarray(prob, dtype=np.float32)), 0.0, 1.0)
    if p.ndim == 3:
        p = p[..., 0]
    return {
        "mask": (p >= threshold).astype(np.uint8),
        "probability": p,
        "summary": confidence_summary(p, threshold),
    }
