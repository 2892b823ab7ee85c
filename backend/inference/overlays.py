"""PNG renderings of results, drawn with :mod:`ml.explain.overlay` (the one drawing module)."""

from __future__ import annotations

from typing import Any

import numpy as np


def heatmap_image(heatmap: np.ndarray) -> bytes:
    """The heatmap alone in the JET colour map."""
    from ml.explain import overlay

    return overlay.to_png(overlay.jet(heatmap))


def heatmap_overlay(
    display: np.ndarray,
    heatmap: np.ndarray,
    focus_bbox: Any = None,
    roi_bbox: Any = None,
    mask: np.ndarray | None = None,
) -> bytes:
    """The heatmap blended over the slice (alpha 0.4), with mask contours and boxes if given."""
    from ml.explain import overlay

    rgb = overlay.explanation_overlay(
        display,
        heatmap,
        mask=mask,
        roi_bbox=tuple(roi_bbox) if roi_bbox is not None else None,
        focus_bbox=tuple(focus_bbox) if focus_bbox is not None else None,
    )
    return overlay.to_png(rgb)


def segmentation_overlay(
    display: np.ndarray,
    mask: np.ndarray,
    bbox: Any,
    levels: list[tuple[str, tuple[float, float]]] | None = None,
) -> bytes:
    """The slice with the mask's outline, the lumbosacral ROI box and the level names."""
    from ml.explain import overlay

    rgb = overlay.draw_contours(overlay.to_rgb(display), mask)
    rgb = overlay.draw_box(rgb, tuple(bbox) if bbox is not None else None)
    if levels:
        rgb = overlay.draw_labels(rgb, levels)
    return overlay.to_png(rgb)


# The mask layer's colour (RGB) and opacity; the viewer stacks these layers over the slice.
MASK_COLOUR = (0, 220, 180)
MASK_ALPHA = 110


def mask_layer(mask: np.ndarray) -> bytes:
    """The mask alone as a transparent RGBA layer (coloured where the mask is set)."""
    from ml.explain import overlay

    m = np.asarray(mask) > 0
    rgba = np.zeros((*m.shape, 4), dtype=np.uint8)
    rgba[m, :3] = MASK_COLOUR
    rgba[m, 3] = MASK_ALPHA
    return overlay.to_png(rgba)


def heatmap_layer(heatmap: np.ndarray) -> bytes:
    """The heatmap as a transparent RGBA layer: JET colours, opaque where it is hot."""
    from ml.explain import overlay

    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    rgba = np.dstack([overlay.jet(heat), np.rint(heat * 200.0).astype(np.uint8)])
    return overlay.to_png(rgba)
