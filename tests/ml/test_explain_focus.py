"""Focus: the design's box exactly, the segmentation ROI, and the inside fraction."""

from __future__ import annotations

import numpy as np
import pytest

from ml.explain.focus import (
    apply_focus,
    box_mask,
    design_box,
    focus_heatmap,
    inside_fraction,
)
from ml.roi import roi_from_segmentation


@pytest.mark.parametrize(
    ("h", "w", "expected"),
    [
        (256, 256, (76, 128, 179, 230)),  # rows 128..229, columns 76..178
        (100, 100, (30, 50, 70, 90)),  # exact percentages stay exact (no 0.7 * 100 = 69.99...)
        (64, 64, (19, 32, 44, 57)),
        (10, 7, (2, 5, 4, 9)),  # w=7: 2.1 -> 2, 4.9 -> 4; h=10: 5, 9
        (300, 200, (60, 150, 140, 270)),
    ],
)
def test_design_box_integer_rule(h, w, expected):
    assert design_box(h, w) == expected
    x1, y1, x2, y2 = expected
    assert (y1, y2) == (50 * h // 100, 90 * h // 100)
    assert (x1, x2) == (30 * w // 100, 70 * w // 100)


def test_box_focus_matches_the_formula_exactly():
    rng = np.random.default_rng(0)
    hm = rng.random((256, 256)).astype(np.float32)
    focused, frac = apply_focus(hm, "box")
    # The design: zero outside rows 50-90 % and columns 30-70 %, then divide by the max.
    ref = np.zeros_like(hm)
    ref[128:230, 76:179] = hm[128:230, 76:179]
    ref = ref / ref.max()
    np.testing.assert_array_equal(focused, ref.astype(np.float32))
    assert frac == pytest.approx(hm[128:230, 76:179].sum() / hm.sum(), rel=1e-6)
    res = focus_heatmap(hm, "box")
    assert res.focus == "box" and res.bbox == (76, 128, 179, 230)
    assert res.region.sum() == 102 * 103


def test_none_focus_is_identity():
    hm = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    focused, frac = apply_focus(hm, "none")
    np.testing.assert_array_equal(focused, hm)
    assert frac == 1.0


def test_segmentation_focus_zero_outside_roi():
    hm = np.random.default_rng(2).random((64, 64)).astype(np.float32)
    roi = np.zeros((64, 64), np.uint8)
    roi[40:60, 10:30] = 1
    focused, frac = apply_focus(hm, "segmentation", roi)
    assert focused[roi == 0].max() == 0.0
    assert focused.max() == pytest.approx(1.0)
    assert frac == pytest.approx(hm[40:60, 10:30].sum() / hm.sum(), rel=1e-6)


def test_segmentation_focus_from_a_structure_mask():
    from ml.data.synthetic import make_phantom
    from ml.roi import bbox_from_mask

    ph = make_phantom(3, 128)
    bbox, roi = roi_from_segmentation(ph.mask)
    assert bbox == tuple(bbox_from_mask(ph.mask))
    hm = np.ones((128, 128), np.float32)
    res = focus_heatmap(hm, "segmentation", roi)
    x1, y1, x2, y2 = bbox
    outside = np.ones((128, 128), bool)
    outside[y1:y2, x1:x2] = False
    assert res.focus == "segmentation" and res.focused[outside].max() == 0.0
    assert res.focused[~outside].min() == 1.0
    assert res.bbox == bbox
    assert res.inside_fraction == pytest.approx((~outside).mean())


def test_missing_roi_falls_back_or_raises():
    hm = np.random.default_rng(3).random((64, 64)).astype(np.float32)
    res = focus_heatmap(hm, "segmentation", None)
    assert res.focus == "box" and "instead" in res.note
    res = focus_heatmap(hm, "segmentation", np.zeros((64, 64)), fallback="none")
    assert res.focus == "none"
    with pytest.raises(ValueError):
        apply_focus(hm, "segmentation", None)
    assert roi_from_segmentation(np.zeros((64, 64), np.uint8)) == (None, None)


def test_zero_heatmap_and_inside_fraction():
    zero = np.zeros((20, 20), np.float32)
    focused, frac = apply_focus(zero, "box")
    assert focused.max() == 0.0 and frac == 0.0
    region = box_mask((0, 0, 10, 20), (20, 20))
    hm = np.zeros((20, 20))
    hm[:, :10] = 1.0
    hm[:, 10:] = 3.0
    assert inside_fraction(hm, region) == pytest.approx(0.25)
