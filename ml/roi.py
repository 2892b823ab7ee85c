"""Lumbosacral region-of-interest geometry shared by prepare, predict and explain.

The region of interest is the lumbosacral junction: from about the middle of L4 through the
L4/L5 and L5/S1 discs down into the upper sacrum, with the vertebral body and the spinal canal
in width. It is derived the same way from level points (the Kaggle coordinates) and from masks
(expert or predicted), so a box drawn from a segmentation matches one drawn from annotations.

Boxes are ``(x1, y1, x2, y2)`` integer pixel coordinates, half-open: the box covers columns
``x1 .. x2 - 1`` and rows ``y1 .. y2 - 1``, so ``mask[y1:y2, x1:x2]`` is the region and
``x2 - x1`` its width. They are always clipped to the image and never empty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

DISC_LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")

# Box proportions in units of the level spacing d (distance between adjacent disc centres,
# about one vertebral body plus one disc). Chosen so that the box from points and the box from
# a vertebral-body mask agree within a few pixels on the synthetic phantoms.
ABOVE_L45 = 0.75  # top edge: above the L4/L5 disc, about the middle of L4
BELOW_L5S1 = 0.9  # bottom edge: below L5/S1, into S1/S2
SIDE = 0.9  # each side: half a body plus the canal (posterior) / prevertebral tissue (anterior)
MIN_AREA_FRACTION = 0.05  # mask components smaller than this share of the largest are noise

Box = tuple[int, int, int, int]


def _clip_box(x1: float, y1: float, x2: float, y2: float, shape: tuple[int, ...]) -> Box:
    h, w = int(shape[0]), int(shape[1])
    bx1 = int(min(max(math.floor(x1), 0), w - 1))
    by1 = int(min(max(math.floor(y1), 0), h - 1))
    bx2 = int(min(max(math.ceil(x2), bx1 + 1), w))
    by2 = int(min(max(math.ceil(y2), by1 + 1), h))
    return bx1, by1, bx2, by2


def level_index(level: str) -> int:
    """Position of a disc level from the top (``"L1/L2"`` -> 0 ... ``"L5/S1"`` -> 4)."""
    return DISC_LEVELS.index(level)


def ordered_points(points: Mapping[str, tuple[float, float]]) -> list[tuple[int, np.ndarray]]:
    """Known disc levels as (index, xy) sorted from top to bottom; unknown names are ignored."""
    out = [
        (level_index(k), np.asarray(v, dtype=np.float64))
        for k, v in points.items()
        if k in DISC_LEVELS and v is not None and np.all(np.isfinite(np.asarray(v, float)))
    ]
    return sorted(out, key=lambda t: t[0])


def _l45_l5s1(points: Mapping[str, tuple[float, float]], shape: tuple[int, ...]):
    """Estimate the L4/L5 and L5/S1 points (extrapolating along the column when missing)."""
    pts = ordered_points(points)
    if not pts:
        raise ValueError("no usable level points (expected keys like 'L4/L5', 'L5/S1')")
    by_idx = dict(pts)
    if len(pts) >= 2:
        # Spacing per level from the two lowest known points, which bracket the junction best.
        (ia, pa), (ib, pb) = pts[-2], pts[-1]
        step = (pb - pa) / (ib - ia)
    else:
        step = np.array([0.0, 0.12 * float(shape[0])])  # a typical spacing at 256 px
    l45 = by_idx.get(3)
    l5s1 = by_idx.get(4)
    if l45 is None and l5s1 is not None:
        l45 = l5s1 - step
    if l5s1 is None and l45 is not None:
        l5s1 = l45 + step
    if l45 is None or l5s1 is None:
        ilow, plow = pts[-1]
        l45 = plow + step * (3 - ilow)
        l5s1 = plow + step * (4 - ilow)
    return l45, l5s1


def bbox_from_points(points: Mapping[str, tuple[float, float]], shape: tuple[int, ...]) -> Box:
    """Lumbosacral box from disc level points.

    Args:
        points: level name (``"L1/L2"`` .. ``"L5/S1"``) -> (x, y) in pixels of an image of
            ``shape``. Missing L4/L5 or L5/S1 are extrapolated from the other levels.
        shape: (height, width, ...) of the image the points refer to.

    Returns:
        (x1, y1, x2, y2), half-open, clipped to the image.

    Raises:
        ValueError: when no known level point is given.
    """
    l45, l5s1 = _l45_l5s1(points, shape)
    d = float(np.hypot(*(l5s1 - l45)))
    if d < 1.0:
        d = 0.12 * float(shape[0])
    x1 = min(l45[0], l5s1[0]) - SIDE * d
    x2 = max(l45[0], l5s1[0]) + SIDE * d
    y1 = l45[1] - ABOVE_L45 * d
    y2 = l5s1[1] + BELOW_L5S1 * d
    return _clip_box(x1, y1, x2, y2, shape)


def _structures(mask: np.ndarray) -> list[dict]:
    """Split a binary or label mask into structures with centroid and extent."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 0]
    values = np.unique(m[m > 0])
    comps: list[np.ndarray] = []
    if values.size > 1 and values.size <= 64 and np.issubdtype(m.dtype, np.integer):
        comps = [m == v for v in values]  # a label mask: one structure per label
    elif values.size:
        n, lab = cv2.connectedComponents((m > 0).astype(np.uint8), connectivity=8)
        comps = [lab == i for i in range(1, n)]
    out = []
    for comp in comps:
        ys, xs = np.nonzero(comp)
        if ys.size == 0:
            continue
        out.append(
            {
                "area": int(ys.size),
                "cy": float(ys.mean()),
                "cx": float(xs.mean()),
                "x1": int(xs.min()),
                "x2": int(xs.max()) + 1,
                "y1": int(ys.min()),
                "y2": int(ys.max()) + 1,
            }
        )
    if not out:
        return out
    largest = max(s["area"] for s in out)
    return [s for s in out if s["area"] >= MIN_AREA_FRACTION * largest]


def bbox_from_mask(mask: np.ndarray) -> Box | None:
    """Lumbosacral box from the lowest structures of a binary or label mask.

    Takes the two lowest structures (vertebral bodies L4 and L5, or discs L4/L5 and L5/S1):
    from a quarter level above the upper one's centre to ``BELOW_L5S1`` levels below the
    lowest one's bottom edge, and ``SIDE - 0.5`` levels (the body's half width is already in
    the structures' extent) on each side.

    Args:
        mask: (H, W) binary or label mask (label masks: one structure per value).

    Returns:
        (x1, y1, x2, y2) half-open and clipped, or None when the mask is empty.
    """
    structs = _structures(mask)
    if not structs:
        return None
    shape = np.asarray(mask).shape
    structs.sort(key=lambda s: s["cy"])
    low = structs[-1]
    if len(structs) >= 2:
        up = structs[-2]
        d = float(np.hypot(low["cx"] - up["cx"], low["cy"] - up["cy"]))
    else:
        up = low
        d = 1.3 * (low["y2"] - low["y1"])
    d = max(d, 4.0)
    x1 = min(up["x1"], low["x1"]) - (SIDE - 0.5) * d
    x2 = max(up["x2"], low["x2"]) + (SIDE - 0.5) * d
    y1 = up["cy"] - 0.25 * d if up is not low else low["y1"] - 0.25 * d
    y2 = low["y2"] + (BELOW_L5S1 - 0.1) * d
    return _clip_box(x1, y1, x2, y2, shape)


def bbox_to_mask(bbox: Box, shape: tuple[int, ...]) -> np.ndarray:
    """A uint8 {0, 1} mask of ``shape[:2]`` that is 1 inside the half-open box."""
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), dtype=np.uint8)
    x1, y1, x2, y2 = (int(v) for v in bbox)
    out[max(y1, 0) : max(min(y2, h), 0), max(x1, 0) : max(min(x2, w), 0)] = 1
    return out


def structure_mask_from_points(
    points: Mapping[str, tuple[float, float]], shape: tuple[int, ...], structure: str
) -> np.ndarray:
    """Approximate vertebral-body or disc shapes from the disc level points.

    Used when a slice has no expert mask of the target structure (mask_kind ``roi``):
    a vertebral body Lk is a box between the disc centres above and below it (0.75 of the
    level spacing high, 0.95 wide, turned with the column); L1's upper disc is extrapolated. A
    disc is an ellipse at its centre (0.9 of the spacing wide, 0.22 high) minus the bodies.

    Args:
        points: disc level -> (x, y) pixels; at least two levels are needed.
        shape: image shape (H, W, ...).
        structure: ``"vertebral_body"`` or ``"disc"``.

    Returns:
        uint8 {0, 1} mask; all zero when fewer than two levels are known.
    """
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), dtype=np.uint8)
    pts = ordered_points(points)
    if len(pts) < 2:
        return out
    # Fill every level from the one above L1/L2 (T12/L1, index -1) to L5/S1 by interpolating
    # (and extrapolating) along the known ones, so gaps in the annotation do not leave holes.
    idx = np.array([i for i, _ in pts], dtype=np.float64)
    xy = np.stack([p for _, p in pts])
    full_idx = np.arange(-1, 5, dtype=np.float64)

    def along(col: int) -> np.ndarray:
        coef = np.polyfit(idx, xy[:, col], 1 if len(idx) < 4 else 2)
        interp = np.polyval(coef, full_idx)
        known = {int(i): xy[k, col] for k, i in enumerate(idx)}
        return np.array([known.get(int(i), v) for i, v in zip(full_idx, interp, strict=True)])

    centres = np.stack([along(0), along(1)], axis=1)  # rows: T12/L1, L1/L2 .. L5/S1
    if structure == "disc":
        lo = int(idx.min())
        for k in range(1, 6):
            if k - 1 < lo:  # no disc above the topmost annotated level
                continue
            prev, nxt = centres[k - 1], centres[min(k + 1, 5)] if k < 5 else None
            step = (centres[k] - prev) if nxt is None else (nxt - prev) / 2
            d = float(np.hypot(*step))
            ang = math.degrees(math.atan2(step[0], step[1]))
            cv2.ellipse(
                out,
                (int(round(centres[k][0])), int(round(centres[k][1]))),
                (max(1, int(round(0.45 * d))), max(1, int(round(0.11 * d)))),
                -ang,
                0,
                360,
                1,
                -1,
            )
        # Discs and bodies are disjoint targets: trim the ellipses where they meet the bodies.
        return out & (1 - structure_mask_from_points(points, shape, "vertebral_body"))
    if structure != "vertebral_body":
        raise ValueError(f"unknown structure {structure!r}")
    for k in range(5):  # L1..L5 between centres[k] (disc above) and centres[k + 1] (below)
        a, b = centres[k], centres[k + 1]
        axis = b - a
        d = float(np.hypot(*axis))
        if d < 1.0:
            continue
        u = axis / d
        n = np.array([u[1], -u[0]])
        c = (a + b) / 2
        hh, hw = 0.375 * d, 0.475 * d
        poly = np.array(
            [c - u * hh - n * hw, c - u * hh + n * hw, c + u * hh + n * hw, c + u * hh - n * hw]
        )
        cv2.fillPoly(out, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return out


def roi_from_segmentation(seg_mask: np.ndarray) -> tuple[tuple[int, int, int, int] | None, Any]:
    """Lumbosacral ROI from a structure mask.

    Args:
        seg_mask: (H, W) binary or label mask of the segmented structures.

    Returns:
        (bbox (x1, y1, x2, y2) or None when the mask is empty, uint8 ROI mask or None).
    """
    mask2d = np.asarray(seg_mask)
    if mask2d.ndim == 3:
        mask2d = mask2d[..., 0]
    bbox = bbox_from_mask(mask2d)
    if bbox is None:
        return None, None
    x1, y1, x2, y2 = (int(v) for v in bbox)
    return (x1, y1, x2, y2), bbox_to_mask((x1, y1, x2, y2), mask2d.shape)
