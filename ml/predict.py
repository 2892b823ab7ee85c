"""Inference helpers shared by the CLI, evaluation and the service: arrays in, arrays out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ml import RESEARCH_USE_NOTICE

if TYPE_CHECKING:
    from ml.bundle import Bundle


def _as_batch(batch) -> np.ndarray:
    arr = np.asarray(batch, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None, ..., None]
    elif arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] != 1:
        raise ValueError(f"expected (N, S, S, 1) images, got shape {arr.shape}")
    return arr


def _run(model, batch: np.ndarray, batch_size: int):
    outs: list[Any] = []
    for start in range(0, len(batch), batch_size):
        out = model.predict_on_batch(batch[start : start + batch_size])
        outs.append(out)
    if isinstance(outs[0], (list, tuple)):
        return [np.concatenate([np.asarray(o[i]) for o in outs]) for i in range(len(outs[0]))]
    if isinstance(outs[0], dict):
        return {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in outs[0]}
    return np.concatenate([np.asarray(o) for o in outs])


def classify(model, batch, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Run a classifier.

    Args:
        model: a classifier with outputs ``[binary_output, stage_output]``.
        batch: (N, S, S, 1) float32 images in [0, 1] (2D/3D input gets the missing axes).
        batch_size: images per forward pass.

    Returns:
        ``(p_status (N, 2), p_stage (N, 4))`` float32 probabilities.
    """
    arr = _as_batch(batch)
    out = _run(model, arr, batch_size)
    if isinstance(out, dict):
        out = [out["binary_output"], out["stage_output"]]
    p_status, p_stage = out
    return p_status.astype(np.float32), p_stage.astype(np.float32)


def segment(model, batch, batch_size: int = 8) -> np.ndarray:
    """Run a segmenter; returns (N, S, S) float32 foreground probabilities."""
    arr = _as_batch(batch)
    prob = np.asarray(_run(model, arr, batch_size), dtype=np.float32)
    return prob[..., 0]


def roi_from_mask(mask: np.ndarray) -> tuple[tuple[int, int, int, int] | None, np.ndarray]:
    """Lumbosacral ROI from a (predicted) structure mask.

    Returns:
        ``(bbox (x1, y1, x2, y2) or None, roi_mask uint8 (H, W))``; an empty mask gives
        ``(None, zeros)``.
    """
    from ml.roi import roi_from_segmentation

    bbox, roi_mask = roi_from_segmentation(mask)
    if roi_mask is None:
        return None, np.zeros(np.asarray(mask).shape[:2], dtype=np.uint8)
    return bbox, roi_mask


def predict_bundle(bundle: Bundle, batch, threshold: float | None = None) -> dict[str, Any]:
    """Run a loaded bundle and return its outputs with the bundle's label provenance.

    Every result carries ``label_provenance`` and the research-use notice, so whoever shows a
    prediction can say where the labels the model learned came from.
    """
    manifest = bundle.manifest
    result: dict[str, Any] = {
        "model": manifest.key,
        "version": manifest.version,
        "task": bundle.task,
        "label_provenance": manifest.label_provenance.model_dump(),
        "notice": RESEARCH_USE_NOTICE,
    }
    if bundle.task == "classification":
        from ml.calibration import apply_temperature

        p_status, p_stage = classify(bundle.model, batch)
        # Reported probabilities are temperature-scaled as serving reports them.
        p_status = apply_temperature(p_status, manifest.temperature("binary"))
        p_stage = apply_temperature(p_stage, manifest.temperature("stage"))
        names_status, names_stage = manifest.status_names, manifest.stage_names
        result["predictions"] = [
            {
                "as_status": names_status[int(np.argmax(ps))],
                "as_status_probabilities": dict(zip(names_status, map(float, ps), strict=True)),
                "stage": names_stage[int(np.argmax(pg))],
                "stage_probabilities": dict(zip(names_stage, map(float, pg), strict=True)),
                "label_source": manifest.label_provenance.label_source,
            }
            for ps, pg in zip(p_status, p_stage, strict=True)
        ]
        result["p_status"], result["p_stage"] = p_status, p_stage
    else:
        thr = manifest.mask_threshold if threshold is None else threshold
        prob = segment(bundle.model, batch)
        result["prob"] = prob
        result["mask"] = (prob >= thr).astype(np.uint8)
        result["threshold"] = float(thr)
    return result
