"""Feature-rule labels: definitions as written, rank scale, per-source vs global, round-trip."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ml.data.labels import (
    AS_STATUS_NAMES,
    GLOBAL_GROUP,
    MIN_GROUP_SIZE,
    STAGE_NAMES,
    LabelRule,
    fit_rule,
    image_features,
    label_source_name,
    load_rule,
    midrank,
)


def random_features(n, rng, shift=0.0, scale=1.0):
    """Raw features like those of MR slices; ``shift``/``scale`` mimic another scanner."""
    mean = rng.uniform(20, 90, n) * scale + shift
    return [
        {
            "mean": float(m),
            "lower_mean": float(m * rng.uniform(0.8, 1.2)),
            "std": float(m * rng.uniform(0.5, 1.0) + rng.normal(0, 5)),
            "edge_density": float(rng.uniform(0.02, 0.25)),
        }
        for m in mean
    ]


def test_names():
    assert AS_STATUS_NAMES == ["negative", "positive"]
    assert STAGE_NAMES == ["Normal", "Early", "Moderate", "Advanced"]
    assert label_source_name("v2") == "feature_rule_v2"


def test_image_features_definitions():
    img = np.zeros((256, 256), np.uint8)
    img[128:] = 100
    f = image_features(img)
    assert f["mean"] == pytest.approx(50.0)
    assert f["lower_mean"] == pytest.approx(100.0)
    assert f["std"] == pytest.approx(50.0)
    edges = cv2.Canny(img, 50, 150)
    assert f["edge_density"] == pytest.approx(np.count_nonzero(edges) / edges.size)
    assert 0 < f["edge_density"] < 0.02  # one horizontal edge
    flat = image_features(np.full((64, 64), 7, np.uint8))
    assert flat["std"] == 0.0 and flat["edge_density"] == 0.0
    # Float input in [0, 1] is put on the uint8 scale first.
    assert image_features(img / 255.0)["mean"] == pytest.approx(50.0)


def test_midrank_scale():
    ref = np.array([1.0, 2.0, 2.0, 3.0])
    np.testing.assert_allclose(midrank(ref, np.array([0.0, 1.0, 2.0, 3.0, 9.0])),
                               [0.0, 0.125, 0.5, 0.875, 1.0])  # fmt: skip
    # Monotone changes of a feature do not change its ranks.
    x = np.random.default_rng(0).normal(size=50)
    np.testing.assert_allclose(midrank(np.sort(x), x), midrank(np.sort(np.exp(x)), np.exp(x)))


def test_v2_as_written():
    rng = np.random.default_rng(1)
    feats = random_features(400, rng)
    srcs = ["a"] * 400
    rule = fit_rule(feats, srcs, "v2", "global")
    status, stage = rule.apply(feats, srcs)
    # Recompute by hand: brightness = 0.4 mean + 0.6 lower-half mean, ranks, weights, percentiles.
    b = np.array([0.4 * f["mean"] + 0.6 * f["lower_mean"] for f in feats])
    t = np.array([f["std"] for f in feats])
    e = np.array([f["edge_density"] for f in feats])
    combined = (
        0.3 * midrank(np.sort(b), b) + 0.4 * midrank(np.sort(t), t) + 0.3 * midrank(np.sort(e), e)
    )
    p52, p60, p70, p85 = np.percentile(combined, [52, 60, 70, 85])
    np.testing.assert_array_equal(status, (combined > p52).astype(int))
    expected_stage = np.where(
        combined > p52,
        (combined > p60).astype(int) + (combined > p70) + (combined > p85),
        0,
    )
    np.testing.assert_array_equal(stage, expected_stage)
    assert status.mean() == pytest.approx(0.48, abs=0.01)
    assert np.all(stage[status == 0] == 0)  # AS- are Normal
    assert set(stage[status == 1].tolist()) == {0, 1, 2, 3}
    assert rule.label_source == "feature_rule_v2"


def test_v1_as_written():
    rng = np.random.default_rng(2)
    feats = random_features(300, rng)
    srcs = ["a"] * 300
    status, stage = fit_rule(feats, srcs, "v1", "global").apply(feats, srcs)
    b = np.array([f["mean"] for f in feats])
    t = np.array([f["std"] for f in feats])
    e = np.array([f["edge_density"] for f in feats])
    rb, rt, re_ = (midrank(np.sort(v), v) for v in (b, t, e))
    expected = (rb < np.percentile(rb, 45)) & (rt > np.percentile(rt, 55))
    np.testing.assert_array_equal(status, expected.astype(int))
    p30, p50, p70 = np.percentile(re_, [30, 50, 70])
    np.testing.assert_array_equal(stage, (re_ > p30).astype(int) + (re_ > p50) + (re_ > p70))
    # Ranks are monotone in the features: the darkest images are picked, as on the raw scale.
    picked = rb < np.percentile(rb, 45)
    k = int(picked.sum())
    assert set(np.argsort(b)[:k].tolist()) == set(np.nonzero(picked)[0].tolist())
    assert abs(k - int((b < np.percentile(b, 45)).sum())) <= 1


def test_per_source_normalization_removes_the_scanner_shortcut():
    rng = np.random.default_rng(3)
    bright = random_features(120, rng, shift=60.0)  # a scanner with brighter, richer images
    dark = random_features(120, rng, scale=0.4)
    feats, srcs = bright + dark, ["bright"] * 120 + ["dark"] * 120
    g_status, _ = fit_rule(feats, srcs, "v2", "global").apply(feats, srcs)
    p_status, _ = fit_rule(feats, srcs, "v2", "per_source").apply(feats, srcs)
    g_rate = [g_status[:120].mean(), g_status[120:].mean()]
    p_rate = [p_status[:120].mean(), p_status[120:].mean()]
    assert g_rate[0] > 0.8 and g_rate[1] < 0.2  # global labels follow the scanner
    assert all(0.3 < r < 0.7 for r in p_rate)
    # Per source, a monotone change of one scanner's intensities changes none of its labels.
    brighter = [{**f, "mean": f["mean"] * 2, "lower_mean": f["lower_mean"] * 2} for f in bright]
    rule2 = fit_rule(brighter + dark, srcs, "v2", "per_source")
    np.testing.assert_array_equal(rule2.apply(brighter + dark, srcs)[0], p_status)


def test_groups_small_and_unseen_sources_fall_back_to_global():
    rng = np.random.default_rng(4)
    feats = random_features(60 + MIN_GROUP_SIZE - 1, rng)
    srcs = ["big"] * 60 + ["small"] * (MIN_GROUP_SIZE - 1)
    rule = fit_rule(feats, srcs, "v2", "per_source")
    assert set(rule.groups) == {GLOBAL_GROUP, "big"}
    assert rule.group_for("small") == GLOBAL_GROUP
    assert rule.group_for("never-seen") == GLOBAL_GROUP
    assert rule.group_for("big") == "big"
    assert fit_rule(feats, srcs, "v2", "global").group_for("big") == GLOBAL_GROUP
    status, stage = rule.apply(feats[:3], ["never-seen"] * 3)
    assert status.shape == (3,) and stage.dtype == np.int32


def test_fit_on_train_applies_to_new_images_and_round_trips(tmp_path):
    rng = np.random.default_rng(5)
    feats = random_features(200, rng)
    srcs = [("a", "b")[i % 2] for i in range(200)]
    train = list(range(0, 200, 5)) + list(range(1, 200, 5)) + list(range(2, 200, 5))
    for version in ("v1", "v2"):
        rule = fit_rule([feats[i] for i in train], [srcs[i] for i in train], version)
        assert rule.n_fit == len(train)
        expected = rule.apply(feats, srcs)
        path = rule.save(tmp_path / f"rule_{version}.json")
        data = json.loads(path.read_text())
        assert data["version"] == version and data["normalization"] == "per_source"
        assert data["research_use_only"] is True and "not by radiologists" in data["provenance"]
        loaded = load_rule(path)
        for got, want in zip(loaded.apply(feats, srcs), expected, strict=True):
            np.testing.assert_array_equal(got, want)
        assert loaded.thresholds == rule.thresholds


def test_bad_inputs():
    feats = random_features(10, np.random.default_rng(6))
    with pytest.raises(ValueError):
        fit_rule(feats, ["a"] * 10, "v3")
    with pytest.raises(ValueError):
        fit_rule(feats, ["a"] * 10, "v2", "per_scanner")
    with pytest.raises(ValueError):
        fit_rule([], [], "v2")
    with pytest.raises(ValueError):
        fit_rule(feats, ["a"] * 9)
    with pytest.raises(ValueError):
        LabelRule.from_dict({"version": "v2"})
    empty = fit_rule(feats, ["a"] * 10).apply([], [])
    assert empty[0].shape == (0,)
