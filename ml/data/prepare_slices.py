"""One slice of `spondyscan prepare`: decode, preprocess, target mask, box and its row.

The mask and box rules are described in :mod:`ml.data.prepare`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.data import adapters

SIZE = 256


@dataclass
class Row:
    """One processed slice on its way to dataset.csv."""

    index: int
    item: adapters.Item
    mask_kind: str
    bbox: tuple[int, int, int, int]
    n_points: int
    features: dict[str, float]
    structure: str
    as_status: int = 0
    stage: int = 0
    split: str = "train"
    score: float = 0.0


class SkipSlice(Exception):
    """A slice that cannot be used (reason in the message)."""


def read_label_mask(path: Path) -> np.ndarray:
    """Read a label mask at the dataset size.

    Args:
        path: the mask image.

    Returns:
        The label map (SIZE, SIZE), resized with nearest neighbours so labels stay labels.

    Raises:
        SkipSlice: the mask cannot be read.
    """
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise SkipSlice(f"mask {path.name} could not be read")
    if m.ndim == 3:
        m = m[..., 0]
    if m.shape != (SIZE, SIZE):
        m = cv2.resize(m, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
    return m


def process_item(
    item: adapters.Item, target: str, include_ct: bool = False
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode one slice and make its model input, target mask and box.

    Returns:
        (image uint8 (256, 256), mask uint8 {0, 255}, info dict with mask_kind, bbox, n_points).

    Raises:
        ImageError: the file is not a readable image.
        SkipSlice: no usable mask or a blank slice.
    """
    from ml.io import read_image, require_content
    from ml.preprocessing import preprocess

    loaded = read_image(item.image_path, frame=item.frame)
    if str(loaded.meta.get("modality", "")).upper() == "CT" and not include_ct:
        raise SkipSlice("CT image (DICOM modality CT) excluded; pass --include-ct to keep it")
    require_content(loaded.pixels)
    unit = preprocess(loaded.pixels, SIZE)
    image = np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)
    points = {k: (x * SIZE, y * SIZE) for k, (x, y) in item.points.items()}
    expert = read_label_mask(item.mask_path) if item.mask_path is not None else None
    mask01, mask_kind = _target_mask(expert, item.structure or target, target, points)
    info: dict[str, Any] = {"n_points": len(points), "mask_kind": mask_kind}
    info["bbox"] = _box(points, expert)
    return image, (mask01 * 255).astype(np.uint8), info


def _target_mask(
    expert: np.ndarray | None,
    expert_structure: str,
    target: str,
    points: dict[str, tuple[float, float]],
) -> tuple[np.ndarray, str]:
    """The {0, 1} mask of the target structure and its kind (expert, roi or none)."""
    from ml.roi import structure_mask_from_points

    if expert is not None and expert_structure == target and np.any(expert > 0):
        return (expert > 0).astype(np.uint8), "expert"
    if len(points) >= 2:
        return structure_mask_from_points(points, (SIZE, SIZE), target), "roi"
    if expert is not None and expert_structure != target:
        raise SkipSlice(
            f"its expert mask shows {expert_structure}, the target is {target}, and it has no "
            "level points to draw a region-of-interest mask"
        )
    return np.zeros((SIZE, SIZE), np.uint8), "none"


def _box(
    points: dict[str, tuple[float, float]], expert: np.ndarray | None
) -> tuple[int, int, int, int]:
    """The lumbosacral box: from the level points, else the expert mask, else the whole image."""
    from ml.roi import bbox_from_mask, bbox_from_points

    bbox = None
    if points:
        bbox = bbox_from_points(points, (SIZE, SIZE))
    elif expert is not None:
        bbox = bbox_from_mask(expert)
    if bbox is None:
        bbox = (0, 0, SIZE, SIZE)
    x1, y1, x2, y2 = (int(v) for v in bbox)
    return x1, y1, x2, y2


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an image as PNG.

    Args:
        path: the file to write.
        image: a uint8 image.

    Raises:
        OSError: the image cannot be encoded.
    """
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path.name}")
    path.write_bytes(buf.tobytes())
