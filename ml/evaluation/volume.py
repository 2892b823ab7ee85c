"""Volume evaluation of a segmenter: whole series in, 3D Dice, IoU and HD95 against 3D masks.

A case is a folder with ``volume.nii.gz`` (or a ``dicom/`` series) and ``mask.nii.gz`` on the
same grid, and optionally ``case.json`` naming its ``source``. Every slice is segmented as a
study is (:func:`ml.study.display_slices`: the series scaled to 8 bits as one, each slice to
256x256), the probabilities are resized back to the input grid and thresholded, and the 3D mask
is compared with the reference (any label > 0):

* Dice and IoU over all voxels;
* HD95: the 95th percentile of the symmetric surface distances, in millimetres (voxel spacing
  from the volume's header); ``None`` when either mask is empty.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _series_of(case: Path) -> tuple[Any, list]:
    from ml.study_run import raw_slices, read_series

    volume = case / "volume.nii.gz"
    source = volume if volume.is_file() else case / "dicom"
    if not source.exists():
        raise FileNotFoundError(f"{case}: neither volume.nii.gz nor dicom/")
    series, files = read_series(source)
    return series, raw_slices(series, files)[0]


def _on_reference_grid(
    series: Any, pred: np.ndarray, case: Path
) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    """The prediction and the reference as voxel arrays of the reference file, and the spacing.

    The prediction goes through :func:`ml.series.mask_to_nifti` (as ``GET
    /studies/{id}/mask.nii.gz`` does), so this also checks the mask lands on the input grid.
    When the two grids share origin and axes but not extent, they are compared where they
    overlap (and the note says so).
    """
    import gzip

    import nibabel as nib

    from ml.series import mask_to_nifti

    ours = nib.Nifti1Image.from_bytes(gzip.decompress(mask_to_nifti(series, pred)))
    ref: Any = nib.load(str(case / "mask.nii.gz"))
    if not np.allclose(ours.affine, ref.affine, atol=1e-3):
        raise ValueError(f"{case.name}: the mask's affine differs from the volume's")
    a, b = np.asarray(ours.dataobj) > 0, np.asarray(ref.dataobj) > 0
    note = ""
    if a.shape != b.shape:
        common = tuple(min(x, y) for x, y in zip(a.shape, b.shape, strict=True))
        note = f"reference grid {b.shape}, volume {a.shape}: compared on the common {common}"
        a, b = a[tuple(slice(0, n) for n in common)], b[tuple(slice(0, n) for n in common)]
    spacing = tuple(float(z) for z in ref.header.get_zooms()[:3])
    return a, b, spacing, note


def segment_series(model: Any, series: Any, raw: list, threshold: float, size: int) -> np.ndarray:
    """A (slices, rows, cols) boolean mask of the series on its own grid."""
    from ml.predict import segment
    from ml.study import display_slices, to_grid

    display = display_slices(raw, size)
    out = np.zeros((len(display), series.rows, series.cols), dtype=bool)
    readable = [i for i, d in enumerate(display) if d is not None]
    if readable:
        probs = segment(model, np.stack([np.asarray(display[i]) for i in readable])[..., None])
        for i, p in zip(readable, probs, strict=True):
            out[i] = to_grid(p, series.rows, series.cols) >= threshold
    return out


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]) -> float | None:
    """95th percentile symmetric surface distance (mm) between two (slice, row, col) masks."""
    from scipy import ndimage

    if not pred.any() or not ref.any():
        return None
    sp, sr = _surface(pred), _surface(ref)
    to_ref = ndimage.distance_transform_edt(~sr, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    distances = np.concatenate([to_ref[sp], to_pred[sr]])
    return float(np.percentile(distances, 95))


def volume_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]
) -> dict[str, Any]:
    """3D Dice, IoU and HD95 of two boolean masks of one shape."""
    if pred.shape != ref.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {ref.shape}")
    inter = float(np.logical_and(pred, ref).sum())
    total = float(pred.sum() + ref.sum())
    union = float(np.logical_or(pred, ref).sum())
    return {
        "dice": round(2.0 * inter / total, 4) if total else 1.0,
        "iou": round(inter / union, 4) if union else 1.0,
        "hd95_mm": None if (h := hd95(pred, ref, spacing)) is None else round(h, 2),
        "voxels_predicted": int(pred.sum()),
        "voxels_reference": int(ref.sum()),
    }


def evaluate_volumes(
    model: Any, cases: list[Path], *, threshold: float = 0.5, size: int = 256
) -> dict[str, Any]:
    """Per-case and per-source 3D metrics of ``model`` (a Keras segmenter) on case folders."""
    per_case: dict[str, Any] = {}
    for case in cases:
        series, raw = _series_of(case)
        pred = segment_series(model, series, raw, threshold, size)
        ours, ref, spacing, note = _on_reference_grid(series, pred, case)
        meta = (
            json.loads((case / "case.json").read_text()) if (case / "case.json").is_file() else {}
        )
        per_case[case.name] = {
            "source": meta.get("source", case.name),
            "structure": meta.get("structure"),
            "slices": len(series.slices),
            **volume_metrics(ours, ref, spacing),
            **({"note": note} if note else {}),
        }
    per_source: dict[str, Any] = {}
    for source in sorted({c["source"] for c in per_case.values()}):
        rows = [c for c in per_case.values() if c["source"] == source]
        hds = [c["hd95_mm"] for c in rows if c["hd95_mm"] is not None]
        per_source[source] = {
            "cases": len(rows),
            "dice": round(float(np.mean([c["dice"] for c in rows])), 4),
            "iou": round(float(np.mean([c["iou"] for c in rows])), 4),
            "hd95_mm": round(float(np.mean(hds)), 2) if hds else None,
        }
    dice = [c["dice"] for c in per_case.values()]
    return {
        "cases": len(per_case),
        "dice": round(float(np.mean(dice)), 4) if dice else None,
        "iou": round(float(np.mean([c["iou"] for c in per_case.values()])), 4) if dice else None,
        "per_case": per_case,
        "per_source": per_source,
        "method": "every slice segmented at 256x256 (series scaled to 8 bits as one), "
        "probabilities resized to the input grid, threshold, 3D comparison with mask.nii.gz "
        "(any label > 0); HD95 in mm",
    }


def find_cases(root: Path) -> list[Path]:
    """Case folders under ``root`` (each with mask.nii.gz), or ``root`` itself if it is one."""
    root = Path(root)
    if (root / "mask.nii.gz").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if (p / "mask.nii.gz").is_file())
