"""Deletion/insertion AUC: batched model calls, curve bookkeeping, score and sentence."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ml.explain import faithfulness as fa  # noqa: E402

S = 32


@pytest.fixture(scope="module")
def corner_model():
    """p(class 1) = sigmoid(k * (mean of the top-left 8x8 corner - 0.5)): known evidence."""
    inputs = keras.Input((S, S, 1), name="image")
    x = keras.layers.Cropping2D(((0, S - 8), (0, S - 8)), name="corner")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="mean")(x)
    out = keras.layers.Dense(2, activation="softmax", name="binary_output")(x)
    model = keras.Model(inputs, out)
    model.get_layer("binary_output").set_weights(
        [np.array([[-10.0, 10.0]], np.float32), np.array([5.0, -5.0], np.float32)]
    )
    return model


def _image():
    img = np.full((S, S), 0.1, np.float32)
    img[:8, :8] = 1.0
    return img


def test_auc_trapezoid():
    assert fa.auc(np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert fa.auc(np.array([1.0, 0.0])) == pytest.approx(0.5)
    assert fa.auc(np.linspace(1, 0, 17)) == pytest.approx(0.5)


def test_true_evidence_map_scores_high_and_inverted_map_low(corner_model):
    img = _image()
    good = np.zeros((S, S), np.float32)
    good[:8, :8] = 1.0
    res = fa.deletion_insertion(corner_model, img, good, "binary_output", steps=16, baseline="mean")
    assert res["class_index"] == 1 and res["initial_probability"] > 0.99
    assert res["deletion_curve"][0] == pytest.approx(res["initial_probability"])
    assert res["deletion_auc"] < 0.5 * res["random_deletion_auc"]
    assert res["insertion_auc"] > res["deletion_auc"]
    assert res["score"] > 0.5 and "strongly" in res["interpretation"]
    bad = 1.0 - good
    worse = fa.deletion_insertion(corner_model, img, bad, "binary_output", baseline="mean")
    assert worse["score"] < 0 and "not be trusted" in worse["interpretation"]
    assert -1.0 <= worse["score"] <= 1.0


def test_all_perturbations_go_through_one_compiled_call(corner_model, monkeypatch):
    calls = []
    real = fa.make_forward_fn(corner_model, "binary_output")

    def counting(model, head):
        def fn(x):
            calls.append(len(x))
            return real(x)

        return fn

    monkeypatch.setattr(fa, "make_forward_fn", counting)
    hm = np.random.default_rng(0).random((S, S)).astype(np.float32)
    res = fa.deletion_insertion(
        corner_model, _image(), hm, steps=10, n_random=3, max_batch=256,
        extra_heatmaps={"focused": hm},
    )  # fmt: skip
    assert calls == [2 + 9 * 6] and res["n_forward"] == 56
    assert set(res["extra"]) == {"focused"}
    # Same map, same rng stream position differs only in tie-breaking: AUCs are close.
    assert res["extra"]["focused"]["deletion_auc"] == pytest.approx(res["deletion_auc"], abs=0.05)
    calls.clear()
    fa.deletion_insertion(corner_model, _image(), hm, steps=10, n_random=3, max_batch=20)
    assert calls == [20, 20, 7]  # 2 + 9 * 5 images in bounded batches


def test_reproducible_and_flat_model_sentence(corner_model):
    hm = np.random.default_rng(1).random((S, S)).astype(np.float32)
    a = fa.deletion_insertion(corner_model, _image(), hm, seed=3)
    b = fa.deletion_insertion(corner_model, _image(), hm, seed=3)
    assert a["deletion_auc"] == b["deletion_auc"] and a["score"] == b["score"]
    flat = np.full((S, S), 0.1, np.float32)  # the model says class 0 at ~1.0 whatever we delete
    res = fa.deletion_insertion(corner_model, flat, hm, class_index=0)
    assert "barely changes" in res["interpretation"]
    one = fa.deletion_insertion(corner_model, _image(), hm, steps=1, n_random=0)
    assert one["n_forward"] == 2 and len(one["deletion_curve"]) == 2 and one["score"] == 0.0


def test_baselines():
    img = _image()
    assert fa.make_baseline(img, "zero").max() == 0.0
    assert np.allclose(fa.make_baseline(img, "mean"), img.mean())
    blur = fa.make_baseline(img, "blur")
    assert blur.shape == img.shape and blur.max() < 1.0
    with pytest.raises(ValueError):
        fa.make_baseline(img, "noise")


def test_plan_then_score_equals_the_one_call(corner_model):
    """Running the planned images elsewhere (e.g. batched with other requests) gives the same
    result as deletion_insertion itself."""
    model = corner_model
    image = _image()
    heatmap = np.random.default_rng(3).random((S, S)).astype(np.float32)
    ref = fa.deletion_insertion(model, image, heatmap, "binary_output", steps=6, n_random=2)
    plan = fa.plan_deletion_insertion(image, heatmap, steps=6, n_random=2)
    assert plan.images.shape[0] == ref["n_forward"] == 2 + 5 * 4
    probs = fa.predict_probabilities(model, plan.images, "binary_output")
    got = fa.score_deletion_insertion(plan, probs)
    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "score", "class_index"):
        assert got[key] == pytest.approx(ref[key]), key
    with pytest.raises(ValueError, match="predictions for"):
        fa.score_deletion_insertion(plan, probs[:-1])


def test_coarse_rows_are_the_two_step_run_inside_an_even_plan(corner_model):
    """The half-way rows of an 8-step plan are exactly the images of a 2-step plan (same seed),
    so the probabilities run on them score like the 2-step plan; odd or short plans have none."""
    hm = np.random.default_rng(2).random((S, S)).astype(np.float32)
    kw = {"n_random": 2, "seed": 5, "baseline": "mean"}
    full = fa.plan_deletion_insertion(_image(), hm, steps=8, **kw)
    rows = fa.coarse_rows(full)
    two = fa.plan_deletion_insertion(_image(), hm, steps=2, **kw)
    assert rows is not None
    assert rows.tolist() == [0, 1, 2 + 3, 2 + 7 + 3, 2 + 14 + 3, 2 + 21 + 3]
    assert np.array_equal(full.images[rows], two.images)
    probs = fa.predict_probabilities(corner_model, full.images, "binary_output")
    coarse = fa.score_deletion_insertion(two, probs[rows])
    assert coarse["steps"] == 2 and not coarse["flat"]  # the corner moves the corner model
    whole = fa.score_deletion_insertion(full, probs)
    assert whole["deletion_curve"][4] == coarse["deletion_curve"][1]  # the same half-way image
    for steps in (2, 3, 7):
        plan = fa.plan_deletion_insertion(_image(), hm, steps=steps, n_random=1)
        assert fa.coarse_rows(plan) is None and not fa.has_coarse_step(steps)
    flat = np.full((S, S), 0.1, np.float32)
    still = fa.plan_deletion_insertion(flat, hm, steps=2, n_random=1)
    res = fa.score_deletion_insertion(
        still, fa.predict_probabilities(corner_model, still.images, "binary_output"), 0
    )
    assert res["flat"] and res["n_forward"] == 5
    note = fa.flat_at_coarse_note(["Normal", "AS"], 0)
    assert "'Normal'" in note and "finer steps were not run" in note
    assert "'class 3'" in fa.flat_at_coarse_note(None, 3)


def test_cheap_models_probe_in_bigger_chunks():
    assert fa.probe_batch_size(85e6) == fa.SMALL_MODEL_MAX_BATCH > fa.DEFAULT_MAX_BATCH
    assert fa.probe_batch_size(1.06e9) == fa.DEFAULT_MAX_BATCH
    assert fa.probe_batch_size(None) == fa.probe_batch_size(0) == fa.DEFAULT_MAX_BATCH


def test_saliency_order_is_descending_with_random_ties():
    rng = np.random.default_rng(5)
    hm = rng.random((64, 64)).astype(np.float32)
    hm[hm < 0.5] = 0.0
    hm[0, :4] = [-0.0, -0.25, 2.0, np.float32(1e-30)]
    order = fa.saliency_order(hm, np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(hm.size))
    values = hm.ravel()[order]
    assert np.all(np.diff(values) <= 0) and values[0] == 2.0 and values[-1] == -0.25
    again = fa.saliency_order(hm, np.random.default_rng(1))
    other = fa.saliency_order(hm, np.random.default_rng(2))
    assert np.array_equal(order, again) and not np.array_equal(order, other)
    zeros = np.flatnonzero(hm.ravel() == 0)  # -0.0 and 0.0 are one tie, shuffled
    first = order[np.isin(order, zeros)]
    assert not np.array_equal(first, np.sort(first))
