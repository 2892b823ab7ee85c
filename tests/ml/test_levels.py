"""Vertebral levels named from the column's geometry: on phantoms (known levels), with touching
bodies and stray blobs, on the real expert masks, and the per-level Dice evaluation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ml.data.synthetic import VERTEBRA_LEVELS, make_phantom
from ml.evaluation.levels_eval import LevelSlice, markdown_table, score_levels
from ml.evaluation.metrics import bootstrap_ci
from ml.levels import LEVEL_NAMES, dice, level_dice, name_levels


def _truth(ph) -> dict[str, np.ndarray]:
    return {name: ph.vertebra_labels == k + 1 for k, name in enumerate(VERTEBRA_LEVELS)}


@pytest.mark.parametrize("seed", range(6))
def test_phantom_levels_are_named_right(seed: int):
    ph = make_phantom(seed, 256)
    levels = name_levels(ph.mask)
    assert [lv.name for lv in levels.levels][:5] == list(LEVEL_NAMES[:5])
    ys = [lv.centroid[1] for lv in levels.levels]
    assert ys == sorted(ys, reverse=True)  # bottom first
    scores = level_dice(levels, _truth(ph))
    assert min(scores.values()) > 0.9, scores


def test_touching_bodies_are_split():
    ph = make_phantom(3, 256)
    # Close the disc spaces: the bodies touch through thin bridges.
    bridged = cv2.morphologyEx(ph.mask, cv2.MORPH_CLOSE, np.ones((1, 9), np.uint8))
    bridged = cv2.dilate(bridged, np.ones((3, 3), np.uint8))
    levels = name_levels(bridged)
    assert len(levels.levels) >= 5
    assert min(level_dice(levels, _truth(ph)).values()) > 0.75


def test_a_blob_off_the_column_is_not_a_vertebra():
    ph = make_phantom(4, 256)
    m = ph.mask.copy()
    cv2.circle(m, (20, 230), 10, 1, -1)  # far in front of the column, low in the image
    levels = name_levels(m)
    assert [lv.name for lv in levels.levels][:5] == list(LEVEL_NAMES[:5])
    assert levels.labels[230, 20] == 0
    assert min(level_dice(levels, _truth(ph)).values()) > 0.9


def test_empty_mask_and_dice():
    assert name_levels(np.zeros((64, 64), np.uint8)).levels == []
    a = np.zeros((8, 8), bool)
    assert dice(a, a) == 1.0
    b = a.copy()
    b[:4] = True
    assert dice(b, a) == 0.0 and dice(b, b) == 1.0


def test_per_level_scores_with_subject_intervals():
    slices, preds = [], []
    for i in range(6):
        ph = make_phantom(10 + i, 128)
        slices.append(LevelSlice(i, f"s{i // 2}", "phantom", _truth(ph)))
        preds.append(ph.mask)
    report = score_levels("m", np.stack(preds), slices, n_boot=200)
    assert report.subjects == 3 and report.slices == 6
    for name in ("L1", "L2", "L3", "L4", "L5"):
        row = report.per_level[name]
        assert row["dice"] > 0.9 and row["ci95"][0] <= row["dice"] <= row["ci95"][1]
    assert report.all_levels_named == 1.0
    assert "| L3 |" in markdown_table(report)
    # A mask shifted by one body: every name is wrong, and the scores say so.
    shifted = [np.roll(p, -(p.shape[0] // 9), axis=0) for p in preds]
    bad = score_levels("m", np.stack(shifted), slices, n_boot=50)
    assert bad.all_levels_named < 1.0
    lo, hi = bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0]), np.array(["a", "a", "b", "b"]), 200)
    assert 1.0 <= lo <= hi <= 4.0


def test_expert_masks_of_the_real_data_are_named_right():
    """On the radiologists' masks (levels known), counting up from the lowest body is right."""
    import csv
    import json

    from tests.conftest import SHARED_DATA

    root = SHARED_DATA / "lumbar_mri"
    if not (root / "slices.csv").is_file():
        pytest.skip(f"needs the real data at {root} (absent on a fresh clone without ../shared)")
    named, total = 0, 0
    with open(root / "slices.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            labels = {int(k): v for k, v in json.loads(r["mask_labels"]).items() if v}
            if r["structure"] != "vertebral_body" or not labels:
                continue
            m = cv2.imread(str(root / r["mask_path"]), cv2.IMREAD_UNCHANGED)
            truth = {v: m == k for k, v in labels.items() if v.startswith("L")}
            scores = level_dice(name_levels(m > 0), truth)
            named += all(d > 0.5 for d in scores.values())
            total += 1
    assert total > 400
    assert named / total > 0.9, f"{named}/{total} slices named right"


def test_level_slices_match_the_dataset_to_its_label_masks(synthetic_dataset, synthetic_source):
    """The prepared test rows find their label masks and level names; perfect masks score 1."""
    from ml.data.dataset import load_split
    from ml.evaluation.levels_eval import level_slices

    slices = level_slices(synthetic_dataset, synthetic_source)
    test = load_split(synthetic_dataset, "test")
    assert slices and all(0 <= s.image_index < len(test) for s in slices)
    for s in slices:
        union = np.any(np.stack(list(s.truth.values())), axis=0)
        assert (union == (test.masks[s.image_index][..., 0] > 0.5)).mean() > 0.98
    perfect = np.stack([np.any(np.stack(list(s.truth.values())), axis=0) for s in slices])
    report = score_levels("truth", perfect.astype(np.uint8), slices, n_boot=50)
    assert all(row["dice"] > 0.9 for row in report.per_level.values())


def test_levels_cli(synthetic_dataset, synthetic_source, tmp_path):
    pytest.importorskip("keras")
    import json

    from ml.bundle import make_random_bundle
    from ml.cli import main

    seg = make_random_bundle(tmp_path, "seg", "attention_unet_lite", task="segmentation")
    out = tmp_path / "levels.json"
    args = ["evaluate", "--levels", "--model", str(seg), "--dataset", str(synthetic_dataset)]
    assert main([*args, "--lumbar-mri", str(synthetic_source), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["slices"] > 0 and set(report["per_level"]) <= {"L1", "L2", "L3", "L4", "L5"}
    from ml.bundle import read_manifest

    record = read_manifest(seg).levels
    assert record is not None and record.slices == report["slices"]
    assert {k: v.dice for k, v in record.per_level.items()} == {
        k: v["dice"] for k, v in report["per_level"].items()
    }
    assert main([*args, "--lumbar-mri", str(tmp_path / "nowhere")]) == 2
