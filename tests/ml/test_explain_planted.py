"""Planted signal: a classifier whose decision depends only on a known region is explained there.

A small dual-head CNN is trained (a few seconds on CPU) on synthetic 64x64 images:
    * ``binary_output`` = 1 iff a bright cross is painted somewhere inside the design's box
      (rows 50-90 %, columns 30-70 %);
    * ``stage_output`` = 1 iff a hollow square is painted in the top band of the image;
    * smooth bright blobs appear anywhere in every image, whatever the labels, as distractors.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ml.explain import explain_image  # noqa: E402
from ml.explain.faithfulness import deletion_insertion  # noqa: E402
from ml.explain.focus import apply_focus, box_mask, design_box, inside_fraction  # noqa: E402
from ml.explain.gradcam import compute_cam  # noqa: E402

S = 64
TOP_BAND = S // 4 + 4  # the hollow squares' rows lie in [1, TOP_BAND)


def make_planted(n: int, seed: int):
    """Images (n, S, S, 1), binary labels (cross in the box), stage labels (square on top)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, S, S, 1), np.float32)
    yb = np.zeros(n, np.int32)
    ys = np.zeros(n, np.int32)
    yy, xx = np.mgrid[0:S, 0:S]
    bx1, by1, bx2, by2 = design_box(S, S)
    for i in range(n):
        img = 0.1 * rng.random((S, S))
        for _ in range(3):
            cy, cx = rng.uniform(0, S, 2)
            r = rng.uniform(2, 4)
            img += 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        cross, square = rng.random() < 0.5, rng.random() < 0.5
        if cross:
            cy, cx = rng.integers(by1 + 4, by2 - 4), rng.integers(bx1 + 4, bx2 - 4)
            img[cy - 3 : cy + 4, cx - 1 : cx + 2] = 1.0
            img[cy - 1 : cy + 2, cx - 3 : cx + 4] = 1.0
        if square:
            cy, cx = rng.integers(4, S // 4), rng.integers(4, S - 4)
            img[cy - 3 : cy + 4, cx - 3 : cx + 4] = 1.0
            img[cy - 2 : cy + 3, cx - 2 : cx + 3] = 0.0
        x[i, ..., 0] = np.clip(img, 0.0, 1.0)
        yb[i], ys[i] = cross, square
    return x, yb, ys


def build_small_classifier():
    inputs = keras.Input((S, S, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(name="p1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.MaxPooling2D(name="p2")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    binary = keras.layers.Dense(2, activation="softmax", name="binary_output")(x)
    stage = keras.layers.Dense(4, activation="softmax", name="stage_output")(x)
    return keras.Model(inputs, [binary, stage], name="planted")


@pytest.fixture(scope="module")
def planted():
    keras.utils.set_random_seed(0)
    x, yb, ys = make_planted(400, seed=10)
    model = build_small_classifier()
    model.compile(
        keras.optimizers.Adam(1e-2),
        loss=["sparse_categorical_crossentropy"] * 2,
        metrics=[["accuracy"], ["accuracy"]],
    )
    model.fit(x, [yb, ys], epochs=5, batch_size=32, verbose=0)
    xt, ybt, yst = make_planted(80, seed=1)
    p_status, p_stage = model.predict_on_batch(xt)
    acc = (np.argmax(p_status, 1) == ybt).mean(), (np.argmax(p_stage, 1) == yst).mean()
    assert min(acc) > 0.9, f"planted classifier did not learn its task: accuracy {acc}"
    return model, xt, ybt, yst


def test_gradcam_mass_lies_in_the_planted_region(planted):
    model, xt, ybt, _ = planted
    pos = xt[ybt == 1][:16]
    res = compute_cam(model, pos, "last_conv", "binary_output")
    assert (res.class_index == 1).all()
    region = box_mask(design_box(S, S), (S, S))
    fractions = [inside_fraction(h, region) for h in res.heatmaps]
    assert np.mean(fractions) >= 0.7, fractions
    # The box focus reports the same fraction.
    assert apply_focus(res.heatmaps[0], "box")[1] == pytest.approx(fractions[0])


def test_gradcam_plus_plus_peaks_in_the_planted_region(planted):
    model, xt, ybt, _ = planted
    pos = xt[ybt == 1][:16]
    res = compute_cam(model, pos, "last_conv", "binary_output", method="gradcam++")
    region = box_mask(design_box(S, S), (S, S)).ravel()
    hits = [region[np.argmax(h)] for h in res.heatmaps]
    assert np.mean(hits) >= 0.9


def test_deletion_auc_clearly_below_random(planted):
    model, xt, ybt, _ = planted
    pos = xt[ybt == 1][:6]
    heatmaps = compute_cam(model, pos, "last_conv", "binary_output", class_index=1).heatmaps
    results = [
        deletion_insertion(model, img, hm, "binary_output", class_index=1)
        for img, hm in zip(pos, heatmaps, strict=True)
    ]
    deletion = np.mean([r["deletion_auc"] for r in results])
    random = np.mean([r["random_deletion_auc"] for r in results])
    assert deletion < 0.6 * random, (deletion, random)
    assert np.median([r["score"] for r in results]) > 0.4
    assert np.mean([r["insertion_auc"] for r in results]) > deletion


def test_two_heads_give_different_maps_where_decisions_differ(planted):
    model, xt, ybt, yst = planted
    both = xt[(ybt == 1) & (yst == 1)][:8]
    assert len(both) >= 4
    status = compute_cam(model, both, "last_conv", "binary_output", class_index=1).heatmaps
    stage = compute_cam(model, both, "last_conv", "stage_output", class_index=1).heatmaps
    box = box_mask(design_box(S, S), (S, S))
    top = np.zeros((S, S), bool)
    top[:TOP_BAND] = True
    for a, b in zip(status, stage, strict=True):
        assert inside_fraction(a, box) > inside_fraction(b, box) + 0.3
        assert inside_fraction(b, top) > inside_fraction(a, top) + 0.3
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.6


def test_explain_image_end_to_end(planted):
    model, xt, ybt, _ = planted
    img = xt[ybt == 1][0, ..., 0]
    res = explain_image(model, img, head="binary", focus="box")
    assert res["class_name"] == "positive" and res["probability"] > 0.5
    assert res["focus"] == "box" and res["inside_fraction"] >= 0.5
    faith = res["faithfulness"]
    assert faith["score"] > 0.3 and "faster" in faith["interpretation"]
    # image + baseline, then 15 inner steps each: deletion, insertion, 3 random orders, focused
    assert faith["n_forward"] == 2 + 15 * 6
    assert "focused" in faith
    hm = res["arrays"]["heatmap"]
    assert hm.shape == (S, S) and np.isfinite(hm).all()
    focused = res["arrays"]["focused_heatmap"]
    assert focused[~box_mask(design_box(S, S), (S, S))].max() == 0.0
