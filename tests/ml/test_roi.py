"""Lumbosacral boxes from points and from masks agree; ROI masks approximate the structures."""

from __future__ import annotations

import numpy as np
import pytest

from ml.data.synthetic import make_phantom
from ml.roi import (
    bbox_from_mask,
    bbox_from_points,
    bbox_to_mask,
    structure_mask_from_points,
)


def iou(a, b):
    ma, mb = bbox_to_mask(a, (256, 256)), bbox_to_mask(b, (256, 256))
    return (ma & mb).sum() / (ma | mb).sum()


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def inside(box, xy):
    x1, y1, x2, y2 = box
    return x1 <= xy[0] < x2 and y1 <= xy[1] < y2


@pytest.mark.parametrize("seed", range(6))
def test_box_from_points_covers_the_lumbosacral_junction(seed):
    ph = make_phantom(seed)
    box = bbox_from_points(ph.points, ph.image.shape)
    x1, y1, x2, y2 = box
    assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256
    assert all(isinstance(v, int) for v in box)
    assert inside(box, ph.points["L4/L5"]) and inside(box, ph.points["L5/S1"])
    assert not inside(box, ph.points["L2/L3"])  # lumbosacral, not the whole column
    assert y2 > ph.points["L5/S1"][1] + 10  # and below L5/S1
    # The lowest vertebral body (L5) lies mostly inside the box.
    l5 = ph.vertebra_labels == 5
    assert (l5 & bbox_to_mask(box, l5.shape).astype(bool)).sum() / l5.sum() > 0.9


@pytest.mark.parametrize("seed", range(6))
def test_box_from_mask_matches_box_from_points(seed):
    ph = make_phantom(seed)
    from_points = bbox_from_points(ph.points, ph.image.shape)
    assert iou(bbox_from_mask(ph.mask), from_points) > 0.6
    assert iou(bbox_from_mask(ph.vertebra_labels), from_points) > 0.6  # label masks too
    disc_box = bbox_from_mask(ph.disc_mask)
    assert inside(disc_box, ph.points["L5/S1"]) and inside(disc_box, ph.points["L4/L5"])


def test_box_from_mask_edge_cases():
    assert bbox_from_mask(np.zeros((64, 64), np.uint8)) is None
    one = np.zeros((64, 64), np.uint8)
    one[30:40, 20:30] = 1
    x1, y1, x2, y2 = bbox_from_mask(one)
    assert x1 < 20 and x2 > 30 and y1 <= 30 and y2 > 40
    # A speck far below the spine is ignored as noise, not taken as the lowest structure.
    ph = make_phantom(0)
    noisy = ph.mask.copy()
    noisy[250, 10] = 1
    assert bbox_from_mask(noisy) == bbox_from_mask(ph.mask)


def test_box_from_points_missing_levels_and_errors():
    ph = make_phantom(2)
    full = bbox_from_points(ph.points, (256, 256))
    partial = {k: v for k, v in ph.points.items() if k != "L5/S1"}
    assert iou(bbox_from_points(partial, (256, 256)), full) > 0.7
    upper = {k: ph.points[k] for k in ("L1/L2", "L2/L3", "L3/L4")}
    assert iou(bbox_from_points(upper, (256, 256)), full) > 0.5
    single = bbox_from_points({"L5/S1": ph.points["L5/S1"]}, (256, 256))
    assert inside(single, ph.points["L5/S1"])
    with pytest.raises(ValueError):
        bbox_from_points({}, (256, 256))
    with pytest.raises(ValueError):
        bbox_from_points({"T12/L1": (1.0, 2.0)}, (256, 256))


def test_box_is_clipped_and_never_empty():
    pts = {"L4/L5": (250.0, 250.0), "L5/S1": (255.0, 262.0)}
    x1, y1, x2, y2 = bbox_from_points(pts, (256, 256))
    assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256


def test_bbox_to_mask_is_half_open():
    m = bbox_to_mask((2, 3, 5, 7), (10, 10))
    assert m.dtype == np.uint8 and m.sum() == 3 * 4
    assert m[3, 2] == 1 and m[6, 4] == 1 and m[7, 4] == 0 and m[3, 5] == 0
    assert bbox_to_mask((-5, -5, 100, 100), (10, 12)).sum() == 120


@pytest.mark.parametrize("seed", range(4))
def test_structure_masks_from_points_approximate_the_truth(seed):
    ph = make_phantom(seed)
    vb = structure_mask_from_points(ph.points, (256, 256), "vertebral_body")
    disc = structure_mask_from_points(ph.points, (256, 256), "disc")
    assert set(np.unique(vb)) == {0, 1} and set(np.unique(disc)) == {0, 1}
    assert dice(vb, ph.mask) > 0.6
    assert dice(disc, ph.disc_mask) > 0.3  # thin structures: a looser match
    assert not np.any(vb & disc)
    assert structure_mask_from_points({"L5/S1": (1.0, 1.0)}, (256, 256), "disc").sum() == 0
    with pytest.raises(ValueError):
        structure_mask_from_points(ph.points, (256, 256), "muscle")
