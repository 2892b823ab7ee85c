"""Synthetic phantoms: exact masks and points, reproducible, varied, written in the real layout."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from ml.data.labels import fit_rule, image_features
from ml.data.synthetic import (
    DISC_LEVELS,
    VERTEBRA_LEVELS,
    make_phantom,
    make_synthetic_dataset,
    sample_params,
    write_synthetic_source,
)


def test_phantom_shapes_and_ranges():
    ph = make_phantom(3)
    assert ph.image.shape == (256, 256) and ph.image.dtype == np.float32
    assert ph.image.min() >= 0.0 and ph.image.max() <= 1.0
    for m in (ph.mask, ph.disc_mask):
        assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    assert set(np.unique(ph.vertebra_labels)) == {0, 1, 2, 3, 4, 5}
    assert set(np.unique(ph.disc_labels)) == {0, 1, 2, 3, 4, 5}
    assert list(ph.points) == list(DISC_LEVELS)


def test_phantom_is_reproducible_and_seeds_differ():
    a, b, c = make_phantom(7), make_phantom(7), make_phantom(8)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.points == b.points
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_masks_and_points_are_consistent(seed):
    ph = make_phantom(seed, profile="t2" if seed % 2 else "t1")
    # Discs never overlap vertebral bodies: the two targets are disjoint.
    assert not np.any(ph.mask & ph.disc_mask)
    assert np.array_equal(ph.mask, (ph.vertebra_labels > 0).astype(np.uint8))
    # Vertebrae L1..L5 run from top to bottom, and each disc point lies in its own disc,
    # between the centroids of the vertebrae above and below.
    cy = [np.nonzero(ph.vertebra_labels == k)[0].mean() for k in range(1, 6)]
    assert cy == sorted(cy)
    ys = [ph.points[lv][1] for lv in DISC_LEVELS]
    assert ys == sorted(ys)
    for i, lv in enumerate(DISC_LEVELS):
        x, y = ph.points[lv]
        assert ph.disc_labels[int(round(y)), int(round(x))] == i + 1
        if i < 4:
            assert cy[i] < y < cy[i + 1]
    # Bodies are of plausible size (a few hundred pixels each at 256 px).
    areas = [int((ph.vertebra_labels == k).sum()) for k in range(1, 6)]
    assert min(areas) > 200 and max(areas) < 3000


def test_size_and_overrides():
    ph = make_phantom(1, size=128, noise=0.0, bridges=0)
    assert ph.image.shape == (128, 128)
    assert ph.params["noise"] == 0.0
    assert all(0 <= x < 128 and 0 <= y < 128 for x, y in ph.points.values())


def test_lateral_slices_share_geometry():
    params = sample_params(np.random.default_rng(0), "t1")
    mid = make_phantom(1, params=params, lateral=0.0)
    side = make_phantom(2, params=params, lateral=0.8)
    for lv in DISC_LEVELS:
        assert mid.points[lv] == pytest.approx(side.points[lv])
    assert side.mask.sum() < mid.mask.sum()  # off-midline bodies are a little narrower


def test_features_vary_enough_for_every_label():
    """Fitted on phantoms, the default rule gives both AS classes and all four stages."""
    phantoms = [make_phantom(s, profile="t1" if s % 2 else "t2") for s in range(40)]
    feats = [image_features(np.rint(p.image * 255).astype(np.uint8)) for p in phantoms]
    sources = ["a" if s % 2 else "b" for s in range(40)]
    for key in ("mean", "std", "edge_density"):
        values = np.array([f[key] for f in feats])
        assert values.std() / values.mean() > 0.05, key
    status, stage = fit_rule(feats, sources).apply(feats, sources)
    assert set(status.tolist()) == {0, 1}
    assert set(stage.tolist()) == {0, 1, 2, 3}


def test_write_synthetic_source_layout(tmp_path):
    root = write_synthetic_source(
        tmp_path / "src", n_subjects=3, slices_per_subject=2, seed=1,
        structure_by_source={"synth_t2": "disc"}, no_points_sources=("synth_t2",),
    )  # fmt: skip
    with open(root / "slices.csv") as fh:
        slices = list(csv.DictReader(fh))
    assert len(slices) == 6
    assert {r["source"] for r in slices} == {"synth_t1", "synth_t2"}
    with open(root / "coords_pretrain.csv") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == [
            "filename", "source", "x", "y", "level", "relative_x", "relative_y"
        ]  # fmt: skip
        coords = list(reader)
    t1 = [r for r in slices if r["source"] == "synth_t1"]
    assert len(coords) == 5 * len(t1)  # synth_t2 written without points
    assert coords[0]["level"] == "L5/S1"  # like the Kaggle file
    for r in slices:
        stem = r["filename"][:-4]
        arr = np.load(root / f"processed_{r['source']}" / f"{stem}.npy")
        assert arr.shape == (256, 256) and arr.dtype == np.uint8
        jpg = cv2.imread(str(root / f"processed_{r['source']}_jpgs" / f"{stem}.jpg"), 0)
        assert np.abs(jpg.astype(int) - arr.astype(int)).mean() < 3
        mask = cv2.imread(str(root / r["mask_path"]), cv2.IMREAD_UNCHANGED)
        labels = json.loads(r["mask_labels"])
        assert set(np.unique(mask)) - {0} == {int(k) for k in labels}
        names = DISC_LEVELS if r["structure"] == "disc" else VERTEBRA_LEVELS
        assert sorted(labels.values()) == sorted(names)
        assert r["subject_id"].startswith(r["source"] + "-")


def test_make_synthetic_dataset(tmp_path):
    out = make_synthetic_dataset(tmp_path / "ds", n=4, slices_per_subject=2, seed=3)
    assert (out / "annotations" / "dataset.csv").is_file()
    assert (tmp_path / "ds.source" / "slices.csv").is_file()
    with open(out / "annotations" / "dataset.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 8
