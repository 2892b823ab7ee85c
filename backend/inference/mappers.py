"""Model outputs (arrays) -> response schemas and PNG artifacts. Pure functions, no I/O."""

from __future__ import annotations

import re
from typing import Any

import cv2
import numpy as np

from backend.inference.registry import ModelEntry
from backend.schemas.models import LabelProvenance
from backend.schemas.results import (
    Box,
    ClassificationOutput,
    Faithfulness,
    ModelRef,
    SegmentationOutput,
    VertebralLevel,
)

DISPLAY_SIZE = 256


def model_ref(entry: ModelEntry) -> ModelRef:
    return ModelRef(
        key=entry.key,
        display_name=entry.display_name,
        version=entry.version,
        architecture=entry.architecture,
    )


def provenance(entry: ModelEntry) -> LabelProvenance:
    return entry.label_provenance


def slug(key: str) -> str:
    """A model key as a safe artifact-name fragment."""
    return re.sub(r"[^a-z0-9_\-]+", "-", key.lower()).strip("-")[:40] or "model"


def to_display(array: np.ndarray, size: int = DISPLAY_SIZE) -> np.ndarray:
    """Resize a 2D float map to the display size (bilinear)."""
    arr = np.asarray(array, dtype=np.float32)
    if arr.shape == (size, size):
        return arr
    return cv2.resize(arr, (size, size), interpolation=cv2.INTER_LINEAR)


def png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 grey (H, W) or RGB (H, W, 3) image."""
    from ml.explain.overlay import to_png

    arr = np.asarray(image)
    if arr.dtype != np.uint8:  # float images in [0, 1]: to_png itself takes uint8 only
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    return to_png(arr)


def box(bbox: Any) -> Box | None:
    if bbox is None:
        return None
    x1, y1, x2, y2 = (int(v) for v in bbox)
    return Box(x1=x1, y1=y1, x2=x2, y2=y2)


def classification(
    entry: ModelEntry, p_status: np.ndarray, p_stage: np.ndarray
) -> ClassificationOutput:
    """Per-model AS status and stage with every class probability, version and provenance."""
    status_names, stage_names = entry.status_names, entry.stage_names
    ps = [float(v) for v in np.asarray(p_status, dtype=np.float64).ravel()]
    pg = [float(v) for v in np.asarray(p_stage, dtype=np.float64).ravel()]
    si, gi = int(np.argmax(ps)), int(np.argmax(pg))
    return ClassificationOutput(
        model=model_ref(entry),
        as_status=status_names[si],  # type: ignore[arg-type]
        as_probability=ps[si],
        as_probabilities=dict(zip(status_names, ps, strict=False)),
        stage=stage_names[gi],
        stage_index=gi,
        stage_probability=pg[gi],
        stage_probabilities=dict(zip(stage_names, pg, strict=False)),
        label_provenance=provenance(entry),
    )


def segmentation(
    entry: ModelEntry,
    prob_display: np.ndarray,
    mask: np.ndarray,
    bbox: Any,
    *,
    levels: Any = None,
    mask_url: str,
    overlay_url: str,
) -> SegmentationOutput:
    """Probability summary, ROI, named vertebral levels and links for one segmentation."""
    from ml.levels import ASSUMPTION

    named = [
        VertebralLevel(
            name=lv.name,
            area_fraction=round(lv.area / mask.size, 5),
            centroid=(round(lv.centroid[0], 1), round(lv.centroid[1], 1)),
            box=box(lv.box),
        )
        for lv in (levels.levels if levels is not None else [])
    ]
    return SegmentationOutput(
        model=model_ref(entry),
        threshold=entry.mask_threshold,
        probability_mean=float(np.mean(prob_display)),
        probability_max=float(np.max(prob_display)),
        mask_fraction=float(np.mean(mask > 0)),
        roi=box(bbox),
        levels=named,
        levels_note=ASSUMPTION if named else "",
        mask_url=mask_url,
        overlay_url=overlay_url,
        label_provenance=provenance(entry),
    )


def faithfulness(result: dict[str, Any] | None) -> Faithfulness | None:
    if not result:
        return None

    def num(key: str) -> float:
        value = float(result.get(key, 0.0))
        return value if np.isfinite(value) else 0.0

    return Faithfulness(
        deletion_auc=num("deletion_auc"),
        insertion_auc=num("insertion_auc"),
        random_deletion_auc=num("random_deletion_auc"),
        score=num("score"),
        interpretation=str(result.get("interpretation", "")),
        steps=int(result.get("steps", 0)),
        random_orders=int(result.get("n_random", 0)),
        images_run=int(result.get("n_forward", 0)),
    )


def calibrated_probability(entry: ModelEntry, head: str, probs: np.ndarray, index: int) -> float:
    """One class's probability after the bundle's temperature scaling of that head."""
    from ml.calibration import apply_temperature

    scaled = apply_temperature(np.asarray(probs), entry.manifest.temperature(head))
    return float(scaled[index]) if 0 <= index < len(scaled) else 0.0


def class_label(entry: ModelEntry, head: str, index: int) -> str:
    names = entry.stage_names if head == "stage" else entry.status_names
    return names[index] if 0 <= index < len(names) else f"class {index}"
