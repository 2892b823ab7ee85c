"""Read a prepared dataset folder (written by ``spondyscan prepare``) into arrays."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CSV_PATH = Path("annotations") / "dataset.csv"
SPLITS = ("train", "test")


@dataclass
class DatasetArrays:
    """One split (or the whole set) of a prepared dataset.

    Attributes:
        images: (N, 256, 256, 1) float32 in [0, 1].
        masks: (N, 256, 256, 1) float32 in {0, 1}.
        as_status: (N,) int32, 0 negative / 1 positive.
        stage: (N,) int32, 0..3 (Normal, Early, Moderate, Advanced).
        rows: the dataset.csv rows (dicts of strings), in order.
        label_source: ``feature_rule_v2``, ``feature_rule_v1``, ``clinical`` or ``mixed``.
        dataset_hash: sha256 hex of dataset.csv's bytes (the whole file, whatever the split).
        sources: (N,) str. subject_ids: (N,) str.
    """

    images: np.ndarray
    masks: np.ndarray
    as_status: np.ndarray
    stage: np.ndarray
    rows: list[dict[str, str]]
    label_source: str
    dataset_hash: str
    sources: np.ndarray
    subject_ids: np.ndarray
    dataset_dir: Path = field(default_factory=Path)

    def __len__(self) -> int:
        return len(self.rows)


def read_rows(dataset_dir: str | Path) -> tuple[list[dict[str, str]], str]:
    """dataset.csv rows and the file's sha256."""
    path = Path(dataset_dir) / CSV_PATH
    if not path.is_file():
        raise FileNotFoundError(2, "no annotations/dataset.csv (run spondyscan prepare)", str(path))
    data = path.read_bytes()
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    return rows, hashlib.sha256(data).hexdigest()


def _read_png(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(2, "missing or unreadable image", str(path))
    return img


def load_split(dataset_dir: str | Path, split: str | None = None) -> DatasetArrays:
    """Load a split of a prepared dataset.

    Args:
        dataset_dir: folder written by ``spondyscan prepare``.
        split: ``"train"``, ``"test"``, or None for every row.

    Returns:
        The split's arrays and rows (empty arrays with the right shapes when it has no rows).

    Raises:
        FileNotFoundError: no dataset.csv, or a listed PNG is missing.
        ValueError: an unknown split name.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS} or None")
    root = Path(dataset_dir)
    rows, digest = read_rows(root)
    if split is not None:
        rows = [r for r in rows if r["split"] == split]
    n = len(rows)
    size = 256
    if n:
        first = _read_png(root / rows[0]["image_path"])
        size = first.shape[0]
    images = np.zeros((n, size, size, 1), np.float32)
    masks = np.zeros((n, size, size, 1), np.float32)
    for i, r in enumerate(rows):
        images[i, ..., 0] = _read_png(root / r["image_path"]) / np.float32(255.0)
        masks[i, ..., 0] = _read_png(root / r["mask_path"]) > 127
    kinds: set[Any] = {r["label_source"] for r in rows}
    label_source = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "")
    return DatasetArrays(
        images=images,
        masks=masks,
        as_status=np.array([int(r["AS_status"]) for r in rows], np.int32),
        stage=np.array([int(r["stage"]) for r in rows], np.int32),
        rows=rows,
        label_source=label_source,
        dataset_hash=digest,
        sources=np.array([r["source"] for r in rows], dtype=str),
        subject_ids=np.array([r["subject_id"] for r in rows], dtype=str),
        dataset_dir=root,
    )


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, 1) float images -> (N, size, size, 1) (area when shrinking)."""
    if images.shape[1] == size:
        return images
    from ml.preprocessing import resize

    return np.stack([resize(img[..., 0], size) for img in images])[..., None].astype(np.float32)


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, 1) binary masks -> (N, size, size, 1) binary (area, then >= 0.5)."""
    if masks.shape[1] == size:
        return masks
    out = resize_images(masks, size)
    return (out >= 0.5).astype(np.float32)
