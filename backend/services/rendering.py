"""Results as pictures and response parts: mask and overlay PNGs, focused heatmaps.

Pure CPU work on arrays (the callers run it off the event loop); every function returns the
response part and the files it drew, named as they will be stored.
"""

from __future__ import annotations

import uuid

import numpy as np

from backend.inference import mappers, overlays
from backend.schemas.results import ExplanationOutput, SegmentationOutput
from backend.services.pipeline import Decoded, Explanation, Segmentation


def artifact_url(analysis_id: uuid.UUID, name: str) -> str:
    """Where a stored file of a result is served (owner only)."""
    return f"/artifacts/{analysis_id}/{name}"


def raw_heatmap(heat: np.ndarray) -> bytes:
    """A heatmap's values (float16, display size) as .npz."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, heat=np.asarray(heat, dtype=np.float16))
    return buf.getvalue()


def segmentation_files(
    seg: Segmentation, decoded: Decoded, analysis_id: uuid.UUID
) -> tuple[SegmentationOutput, dict[str, bytes]]:
    """The mask and its outline over the slice, and the segmentation's response part."""
    files = {
        "mask.png": mappers.png((seg.mask * 255).astype(np.uint8)),
        "segmentation.png": overlays.segmentation_overlay(decoded.display, seg.mask, seg.bbox),
    }
    out = mappers.segmentation(
        seg.entry,
        seg.prob,
        seg.mask,
        seg.bbox,
        mask_url=artifact_url(analysis_id, "mask.png"),
        overlay_url=artifact_url(analysis_id, "segmentation.png"),
    )
    return out, files


def explanation_files(
    ex: Explanation,
    decoded: Decoded,
    analysis_id: uuid.UUID,
    *,
    focus: str,
    seg: Segmentation | None,
    per_model: bool,
    prefix: str = "",
) -> tuple[ExplanationOutput, dict[str, bytes]]:
    """The heatmap alone, over the slice, and focused on the ROI; the explanation's part.

    ``per_model`` names the files after the model (a full analysis explains several models);
    ``prefix`` starts every file name (a study's slice, ``s0012-``).
    """
    from ml.explain.focus import focus_heatmap

    entry, head = ex.entry, ex.head
    heat = np.clip(mappers.to_display(ex.cam.heatmap), 0.0, 1.0)
    focused = focus_heatmap(heat, focus, seg.roi_mask if seg else None, fallback="box")
    base = f"{mappers.slug(entry.key)}-{head}" if per_model else head
    names = {kind: f"{prefix}{kind}-{base}.png" for kind in ("heatmap", "gradcam", "focused")}
    files = {
        names["heatmap"]: overlays.heatmap_image(heat),
        names["gradcam"]: overlays.heatmap_overlay(decoded.display, heat),
        # The values themselves, for the DICOM parametric map (interop.dicom_out).
        f"{prefix}raw-{base}.npz": raw_heatmap(heat),
    }
    has_focus = focused.focus != "none"
    if has_focus:
        by_roi = focused.focus == "segmentation" and seg is not None
        files[names["focused"]] = overlays.heatmap_overlay(
            decoded.display,
            focused.focused,
            focus_bbox=None if by_roi else focused.bbox,
            roi_bbox=seg.bbox if by_roi and seg is not None else None,
            mask=seg.mask if by_roi and seg is not None else None,
        )
    out = ExplanationOutput(
        model=mappers.model_ref(entry),
        head=head,  # type: ignore[arg-type]
        method=ex.method,  # type: ignore[arg-type]
        focus=focused.focus,  # type: ignore[arg-type]
        class_index=ex.cam.class_index,
        class_label=mappers.class_label(entry, head, ex.cam.class_index),
        probability=float(ex.cam.prob),
        inside_fraction=float(focused.inside_fraction),
        focus_note=focused.note,
        method_note=ex.method_note,
        roi=mappers.box(focused.bbox),
        faithfulness=mappers.faithfulness(ex.faithfulness),
        heatmap_url=artifact_url(analysis_id, names["heatmap"]),
        overlay_url=artifact_url(analysis_id, names["gradcam"]),
        focused_overlay_url=artifact_url(analysis_id, names["focused"]) if has_focus else None,
        label_provenance=mappers.provenance(entry),
    )
    return out, files
