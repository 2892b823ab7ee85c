"""Name the vertebral levels of a sagittal vertebral-body mask from the column's geometry.

The shipped segmenters are trained on vertebral-body masks (L1-L5 and, for some sources, T11-T12
above them); the sacrum is never in their masks. So on a sagittal lumbar slice the lowest body of
the column is L5, and the bodies above it are L4, L3, L2, L1, T12, T11 ... in turn.

Steps (pure NumPy/OpenCV on one (S, S) mask, head at the top of the image):

1. Split touching bodies: the mask is eroded until thin bridges (a merged disc space) break; each
   eroded part seeds one body and every mask pixel joins its nearest seed.
2. Keep the column: parts smaller than ``min_area`` of the median body are dropped, and so are
   parts far (more than ``max_offset`` median body widths) from the line fitted through the
   centroids (a stray blob in the bowel or the back muscles is not a vertebra).
3. Order by height: bottom first; names are :data:`LEVEL_NAMES` from L5 upwards.

This is an assumption about the field of view (the lumbosacral junction is in the image), stated
in every result that carries level names.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Bottom to top: the lowest segmented body of the column is L5.
LEVEL_NAMES: tuple[str, ...] = ("L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9")
LUMBAR: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5")
ASSUMPTION = (
    "Levels are counted upwards from the lowest segmented vertebral body, taken as L5 (the "
    "segmenter does not segment the sacrum); they are wrong if L5 is outside the image."
)


@dataclass
class Level:
    """One named vertebral body of a slice.

    Attributes:
        name: "L5", "L4", ... (bottom first).
        label: its value in :attr:`LevelMap.labels`.
        area: pixels.
        centroid: (x, y) in pixels.
        box: (x1, y1, x2, y2) inclusive-exclusive pixel box.
    """

    name: str
    label: int
    area: int
    centroid: tuple[float, float]
    box: tuple[int, int, int, int]


@dataclass
class LevelMap:
    """The named bodies of one mask: ``labels`` (S, S) int32 (0 = background, k = ``levels``'s
    k-th entry's label) and the levels, bottom first."""

    labels: np.ndarray
    levels: list[Level]

    def mask_of(self, name: str) -> np.ndarray:
        """Boolean mask of one named level (all False when it was not found)."""
        for lv in self.levels:
            if lv.name == name:
                return np.asarray(self.labels == lv.label)
        return np.zeros(self.labels.shape, bool)


def _split_bodies(mask: np.ndarray, erode_px: int) -> np.ndarray:
    """Int32 labels: every mask pixel assigned to its nearest eroded core (bridges broken)."""
    from scipy import ndimage

    m = mask.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
    cores = cv2.erode(m, kernel)
    n, seeds = cv2.connectedComponents(cores, connectivity=4)
    if n <= 1:  # everything eroded away: fall back to plain connected components
        _, labels = cv2.connectedComponents(m, connectivity=8)
        return labels.astype(np.int32)
    _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    nearest = seeds[iy, ix]
    return np.where(m > 0, nearest, 0).astype(np.int32)


def _parts(labels: np.ndarray) -> list[tuple[int, int, tuple[float, float], tuple[int, ...]]]:
    out: list[tuple[int, int, tuple[float, float], tuple[int, ...]]] = []
    for k in np.unique(labels):
        if k == 0:
            continue
        ys, xs = np.nonzero(labels == k)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        out.append((int(k), int(xs.size), (float(xs.mean()), float(ys.mean())), box))
    return out


def name_levels(
    mask: np.ndarray,
    *,
    erode_px: int | None = None,
    min_area: float = 0.2,
    max_offset: float = 1.5,
) -> LevelMap:
    """Split a vertebral-body mask into bodies and name them from the bottom (L5) up.

    Args:
        mask: (S, S) (or (S, S, 1)) binary mask of vertebral bodies, head at the top.
        erode_px: erosion radius that breaks bridges between bodies (default: side / 128,
            at least 1).
        min_area: drop parts smaller than this share of the median part's area.
        max_offset: drop parts whose centroid lies further than this many median body widths
            from the line through the centroids.
    """
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 0]
    m = m > 0
    side = max(m.shape)
    labels = _split_bodies(m, erode_px or max(1, side // 128))
    parts = _parts(labels)
    if not parts:
        return LevelMap(np.zeros(m.shape, np.int32), [])
    median_area = float(np.median([p[1] for p in parts]))
    parts = [p for p in parts if p[1] >= min_area * median_area]
    parts = _on_the_column(parts, max_offset)
    parts.sort(key=lambda p: -p[2][1])  # bottom (largest y) first
    out = np.zeros(m.shape, np.int32)
    levels = []
    for i, (k, area, centroid, box) in enumerate(parts[: len(LEVEL_NAMES)]):
        out[labels == k] = i + 1
        levels.append(Level(LEVEL_NAMES[i], i + 1, area, centroid, box))  # type: ignore[arg-type]
    return LevelMap(out, levels)


def _on_the_column(
    parts: list[tuple[int, int, tuple[float, float], tuple[int, ...]]], max_offset: float
) -> list[tuple[int, int, tuple[float, float], tuple[int, ...]]]:
    """Parts whose centroid is near the line x = a*y + b through the (area-weighted) centroids."""
    if len(parts) < 3:
        return parts
    xs = np.array([p[2][0] for p in parts])
    ys = np.array([p[2][1] for p in parts])
    w = np.array([p[1] for p in parts], float)
    a, b = np.polyfit(ys, xs, 1, w=np.sqrt(w))
    width = float(np.median([p[3][2] - p[3][0] for p in parts]))
    keep = np.abs(xs - (a * ys + b)) <= max_offset * max(width, 1.0)
    return [p for p, k in zip(parts, keep, strict=True) if k]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def level_dice(predicted: LevelMap, truth: dict[str, np.ndarray]) -> dict[str, float]:
    """Dice per named level: the predicted body called ``name`` against the true ``name`` body.

    Args:
        predicted: :func:`name_levels` of the predicted mask.
        truth: level name -> boolean mask of that body (levels unknown in the truth are left out).
    """
    return {name: dice(predicted.mask_of(name), gt) for name, gt in truth.items()}
