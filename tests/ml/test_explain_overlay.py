"""Drawing (JET at alpha 0.4, contours, boxes, PNG) and the segmentation confidence summary."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ml.explain import overlay
from ml.explain.segmentation import confidence_summary, explain_segmentation


def test_overlay_is_design_blend():
    img = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    hm = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    out = overlay.overlay_heatmap(img, hm)
    gray = np.repeat(np.rint(img * 255).astype(np.uint8)[..., None], 3, axis=2)
    jet = cv2.cvtColor(
        cv2.applyColorMap(np.rint(hm * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    ref = 0.6 * gray.astype(np.float64) + 0.4 * jet.astype(np.float64)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(np.float64) - ref).max() <= 1.0
    # A heatmap of another size is resized onto the image.
    assert overlay.overlay_heatmap(img, hm[:8, :8]).shape == (32, 32, 3)


def test_contours_box_and_png_round_trip():
    rgb = overlay.to_rgb(np.zeros((40, 40), np.float32))
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 10:20] = 1
    drawn = overlay.draw_contours(rgb, mask)
    assert (drawn[10, 10] == overlay.CONTOUR_COLOR).all() and (drawn[15, 15] == 0).all()
    boxed = overlay.draw_box(rgb, (5, 6, 30, 35))
    assert (boxed[6, 5] == overlay.ROI_COLOR).all() and (boxed[34, 29] == overlay.ROI_COLOR).all()
    assert (boxed[35, 30] == 0).all()  # half-open: x2, y2 are outside
    png = overlay.to_png(boxed)
    assert png.startswith(b"\x89PNG")
    back = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), 4)
    np.testing.assert_array_equal(back, boxed)
    full = overlay.explanation_overlay(
        np.zeros((40, 40)), np.zeros((40, 40)), mask, (5, 6, 30, 35), (1, 1, 10, 10)
    )
    assert full.shape == (40, 40, 3)


def test_confidence_summary():
    prob = np.zeros((10, 10))
    prob[:2] = 0.9  # 20 confident mask pixels
    prob[2] = 0.5  # 10 uncertain mask pixels
    prob[3] = 0.35  # 10 uncertain background pixels
    s = confidence_summary(prob)
    assert s["area_pixels"] == 30 and s["area_fraction"] == pytest.approx(0.3)
    assert s["mean_prob_inside"] == pytest.approx((20 * 0.9 + 10 * 0.5) / 30)
    assert s["uncertain_fraction"] == pytest.approx(0.2)
    assert s["uncertain_to_area"] == pytest.approx(20 / 30)
    empty = confidence_summary(np.zeros((4, 4)))
    assert empty["area_pixels"] == 0 and empty["mean_prob_inside"] is None
    seg = explain_segmentation(prob[..., None])
    assert seg["mask"].dtype == np.uint8 and seg["mask"].sum() == 30
    assert seg["probability"].shape == (10, 10)
