"""Region focus for heatmaps: none, the design's fixed box, or the ROI from a segmentation mask.

A focused map is the heatmap with everything outside the region set to zero, divided again by
its maximum so its peak is 1. Alongside it we report how much of the *unfocused* heatmap's mass
already lay inside the region, so a user can tell a map that was mostly there anyway from one
that the focus had to cut down.

The design's box, made exact for any image size (integer arithmetic, no float rounding):
rows ``floor(50*H/100) <= r < floor(90*H/100)`` and columns ``floor(30*W/100) <= c <
floor(70*W/100)`` (half-open, like a Python slice ``[y1:y2, x1:x2]``). For 256x256 that is
rows 128..229 and columns 76..178.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ml.vocab import FOCUS_MODES

# The design's box, in percent of the height (rows) and the width (columns).
BOX_ROWS_PERCENT = (50, 90)
BOX_COLS_PERCENT = (30, 70)


class FocusResult(NamedTuple):
    """A focused heatmap and how it was obtained.

    Attributes:
        focused: (H, W) float32 in [0, 1]; zero outside the region, peak 1 (or all zero).
        focus: the focus actually applied ("none", "box" or "segmentation").
        inside_fraction: share of the unfocused heatmap's mass inside the region (1.0 for
            "none", whose region is the whole image; 0.0 for an all-zero heatmap).
        region: (H, W) bool mask of the region used.
        bbox: (x1, y1, x2, y2) of the region, x2/y2 exclusive, or None.
        note: why the focus differs from the one requested, else "".
    """

    focused: np.ndarray
    focus: str
    inside_fraction: float
    region: np.ndarray
    bbox: tuple[int, int, int, int] | None
    note: str


def design_box(h: int, w: int) -> tuple[int, int, int, int]:
    """The design's fixed box for an (h, w) image as (x1, y1, x2, y2), x2/y2 exclusive.

    ``y1 = 50*h // 100``, ``y2 = 90*h // 100``, ``x1 = 30*w // 100``, ``x2 = 70*w // 100``.
    """
    y1 = BOX_ROWS_PERCENT[0] * h // 100
    y2 = BOX_ROWS_PERCENT[1] * h // 100
    x1 = BOX_COLS_PERCENT[0] * w // 100
    x2 = BOX_COLS_PERCENT[1] * w // 100
    return x1, y1, x2, y2


def box_mask(bbox: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of a half-open (x1, y1, x2, y2) box, clipped to the image."""
    from ml.roi import bbox_to_mask  # the data side owns the box geometry

    return bbox_to_mask(bbox, shape).astype(bool)


def inside_fraction(heatmap: np.ndarray, region: np.ndarray) -> float:
    """Share of the heatmap's total mass inside ``region`` (0.0 for an all-zero map)."""
    hm = np.nan_to_num(np.asarray(heatmap, dtype=np.float64))
    total = float(hm.sum())
    if total <= 0.0:
        return 0.0
    return float(hm[np.asarray(region, dtype=bool)].sum() / total)


def _renormalize(masked: np.ndarray) -> np.ndarray:
    peak = float(masked.max()) if masked.size else 0.0
    if peak <= 0.0:
        return np.zeros_like(masked, dtype=np.float32)
    return np.clip(masked / peak, 0.0, 1.0).astype(np.float32)


def _bbox_of(region: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def focus_heatmap(
    heatmap: np.ndarray,
    focus: str = "none",
    roi_mask: np.ndarray | None = None,
    fallback: str = "box",
) -> FocusResult:
    """Apply a focus and say what was applied.

    Args:
        heatmap: (H, W) map in [0, 1].
        focus: "none", "box" or "segmentation".
        roi_mask: (H, W) ROI mask (non-zero = inside) for "segmentation", e.g. from
            :func:`ml.roi.roi_from_segmentation`.
        fallback: focus used when "segmentation" has no usable ROI ("box", "none"), or
            "error" to raise instead.

    Returns:
        A :class:`FocusResult`.
    """
    hm = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if hm.ndim != 2:
        raise ValueError(f"heatmap must be 2D, got shape {hm.shape}")
    h, w = hm.shape
    if focus not in FOCUS_MODES:
        raise ValueError(f"unknown focus {focus!r}; choose one of {FOCUS_MODES}")
    note = ""
    if focus == "segmentation":
        roi = None if roi_mask is None else np.asarray(roi_mask)
        if roi is not None and roi.ndim == 3:
            roi = roi[..., 0]
        if roi is not None and roi.shape != hm.shape:
            raise ValueError(f"roi_mask shape {roi.shape} does not match heatmap {hm.shape}")
        if roi is None or not roi.any():
            if fallback == "error":
                raise ValueError("segmentation focus needs a non-empty roi_mask")
            note = (
                "no region of interest could be derived from the segmentation; "
                f"used the {fallback!r} focus instead"
            )
            focus = fallback
        else:
            region = roi.astype(bool)
            return FocusResult(
                _renormalize(np.where(region, hm, 0.0)),
                "segmentation",
                inside_fraction(hm, region),
                region,
                _bbox_of(region),
                note,
            )
    if focus == "box":
        bbox = design_box(h, w)
        region = box_mask(bbox, (h, w))
        return FocusResult(
            _renormalize(np.where(region, hm, 0.0)),
            "box",
            inside_fraction(hm, region),
            region,
            bbox,
            note,
        )
    region = np.ones((h, w), dtype=bool)
    return FocusResult(hm.astype(np.float32), "none", 1.0, region, None, note)


def apply_focus(
    heatmap: np.ndarray, focus: str = "none", roi_mask: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Focused heatmap and the unfocused map's mass fraction inside the region.

    Strict: "segmentation" without a non-empty ``roi_mask`` raises ``ValueError`` (use
    :func:`focus_heatmap` for a fallback and to learn which focus was applied).
    """
    res = focus_heatmap(heatmap, focus, roi_mask, fallback="error")
    return res.focused, res.inside_fraction
