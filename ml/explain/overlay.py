"""Drawing explanations: JET heatmap overlays, mask contours, ROI boxes, PNG encoding.

Kept apart from the computations so those stay pure arrays. Every function takes and returns
uint8 RGB (H, W, 3) arrays, except :func:`to_png` which returns bytes.
"""

from __future__ import annotations

import cv2
import numpy as np

ALPHA = 0.4  # the design's overlay weight of the heatmap
CONTOUR_COLOR = (0, 255, 0)
ROI_COLOR = (255, 255, 0)
FOCUS_BOX_COLOR = (255, 255, 255)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A (H, W) or (H, W, 1) image in [0, 1] (float) or uint8 as uint8 RGB."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] == 3:
        return img.astype(np.uint8) if img.dtype == np.uint8 else _to_uint8(img)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {img.shape}")
    gray = img if img.dtype == np.uint8 else _to_uint8(img)
    return np.repeat(gray[..., None], 3, axis=2)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def jet(heatmap: np.ndarray) -> np.ndarray:
    """A [0, 1] heatmap coloured with OpenCV's JET colormap, as uint8 RGB."""
    hm = _to_uint8(np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0))
    return cv2.cvtColor(cv2.applyColorMap(hm, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """``(1 - alpha) * image + alpha * JET(heatmap)`` as uint8 RGB (alpha 0.4 by design).

    The heatmap is resized bilinearly to the image when their sizes differ.
    """
    base = to_rgb(image)
    hm: np.ndarray = np.asarray(heatmap, dtype=np.float32)
    if hm.shape[:2] != base.shape[:2]:
        hm = cv2.resize(hm, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(base, 1.0 - alpha, jet(hm), alpha, 0.0)


def draw_contours(
    rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = CONTOUR_COLOR, thickness=1
) -> np.ndarray:
    """Outline a binary mask's regions on a copy of ``rgb``."""
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    m = (np.asarray(mask) > 0).astype(np.uint8)
    if m.ndim == 3:
        m = m[..., 0]
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, color, thickness)
    return out


def draw_box(
    rgb: np.ndarray,
    bbox: tuple[int, int, int, int] | None,
    color: tuple[int, int, int] = ROI_COLOR,
    thickness: int = 1,
) -> np.ndarray:
    """Draw a half-open (x1, y1, x2, y2) box (its last row/column is x2 - 1, y2 - 1)."""
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    if bbox is None:
        return out
    x1, y1, x2, y2 = (int(v) for v in bbox)
    cv2.rectangle(out, (x1, y1), (max(x2 - 1, x1), max(y2 - 1, y1)), color, thickness)
    return out


def draw_labels(
    rgb: np.ndarray,
    labels: list[tuple[str, tuple[float, float]]],
    color: tuple[int, int, int] = (255, 255, 0),
) -> np.ndarray:
    """Write short labels (e.g. vertebral levels) to the right of the given (x, y) points."""
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    scale = max(0.3, min(w, h) / 700.0)
    thick = max(1, round(scale * 2))
    for text, (x, y) in labels:
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        org = (int(min(max(x + w * 0.06, 0), w - tw - 1)), int(min(max(y + th / 2, th), h - 1)))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick)
    return out


def probability_image(prob: np.ndarray) -> np.ndarray:
    """A per-pixel probability map in [0, 1] as a JET-coloured uint8 RGB image."""
    return jet(np.clip(np.nan_to_num(np.asarray(prob, dtype=np.float64)), 0.0, 1.0))


def to_png(rgb: np.ndarray) -> bytes:
    """Encode a uint8 RGB, RGBA (or grey) image as PNG bytes."""
    arr: np.ndarray = np.ascontiguousarray(rgb, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    elif arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def explanation_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    mask: np.ndarray | None = None,
    roi_bbox: tuple[int, int, int, int] | None = None,
    focus_bbox: tuple[int, int, int, int] | None = None,
    alpha: float = ALPHA,
) -> np.ndarray:
    """Heatmap overlay plus, when given, the mask's contours, the ROI box and the focus box."""
    out = overlay_heatmap(image, heatmap, alpha)
    if mask is not None:
        out = draw_contours(out, mask)
    if roi_bbox is not None:
        out = draw_box(out, roi_bbox, ROI_COLOR)
    if focus_bbox is not None and focus_bbox != roi_bbox:
        out = draw_box(out, focus_bbox, FOCUS_BOX_COLOR)
    return out
