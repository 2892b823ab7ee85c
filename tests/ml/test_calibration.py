"""Calibration: temperature scaling keeps the predicted class, fits a known temperature back,
lowers the expected calibration error of an overconfident model, and travels in the bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ml.calibration import apply_temperature, ece, fit_temperature, nll, reliability
from ml.evaluation.calibrate import calibrate, markdown_table, summary


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _overconfident(n: int, k: int, t: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the "model" reports softmax(t * z): T = t undoes it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    true = _softmax(z)
    labels = np.array([rng.choice(k, p=p) for p in true])
    return _softmax(t * z), labels


def test_temperature_keeps_the_class_and_sums_to_one():
    p = _softmax(np.random.default_rng(0).normal(0, 2, (50, 4)))
    assert np.allclose(apply_temperature(p, 1.0), p)
    for t in (0.5, 2.0, 5.0):
        q = apply_temperature(p, t)
        assert np.allclose(q.sum(axis=1), 1.0)
        assert (q.argmax(axis=1) == p.argmax(axis=1)).all()
    assert (apply_temperature(p, 3.0).max(axis=1) <= p.max(axis=1) + 1e-12).all()  # softer
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(p, 0.0)


def test_fit_recovers_a_known_temperature_and_lowers_ece():
    p, y = _overconfident(4000, 4, 3.0, seed=1)
    t = fit_temperature(p, y)
    assert t == pytest.approx(3.0, rel=0.15)
    q = apply_temperature(p, t)
    assert ece(q, y) < ece(p, y) / 2
    assert nll(q, y) < nll(p, y)
    with pytest.raises(ValueError, match="no held-out"):
        fit_temperature(p[:0], y[:0])


def test_reliability_bins():
    p, y = _overconfident(2000, 2, 1.0, seed=2)  # calibrated by construction
    rel = reliability(p, y, bins=10)
    assert rel.count.sum() == 2000
    assert rel.ece < 0.05
    used = rel.count > 0
    assert ((rel.confidence[used] >= rel.edges[:-1][used] - 1e-9)
            & (rel.confidence[used] <= rel.edges[1:][used] + 1e-9)).all()  # fmt: skip
    assert ece(*_overconfident(2000, 2, 4.0, seed=3)) > 0.1  # overconfident: a clear gap


def test_calibrate_record_and_table():
    pv, yv = _overconfident(1500, 2, 2.5, seed=4)
    sv, zv = _overconfident(1500, 4, 0.5, seed=5)  # underconfident stage head
    pt, yt = _overconfident(800, 2, 2.5, seed=6)
    st, zt = _overconfident(800, 4, 0.5, seed=7)
    run = calibrate(
        {"binary": pv, "stage": sv}, {"binary": yv, "stage": zv},
        {"binary": pt, "stage": st}, {"binary": yt, "stage": zt}, fitted_on="validation",
    )  # fmt: skip
    rec = run.record
    assert rec.binary.temperature > 1.5 and rec.stage.temperature < 0.8
    assert rec.binary.ece_after < rec.binary.ece_before
    assert rec.stage.ece_after < rec.stage.ece_before
    assert rec.n_fit == 1500 and rec.n_eval == 800
    table = markdown_table([summary("m", rec)])
    assert "| m |" in table and f"{rec.binary.temperature:.2f}" in table


def _record(t_binary: float, t_stage: float):
    """A calibration record fitted on synthetic over/underconfident heads."""
    data = [
        {
            "binary": _overconfident(n, 2, t_binary, seed),
            "stage": _overconfident(n, 4, t_stage, seed),
        }
        for n, seed in ((600, 8), (200, 9))
    ]
    probs = [{h: d[h][0] for h in d} for d in data]
    labels = [{h: d[h][1] for h in d} for d in data]
    return calibrate(probs[0], labels[0], probs[1], labels[1], fitted_on="synthetic").record


def test_bundle_applies_its_temperatures(tmp_path: Path):
    pytest.importorskip("keras")
    from ml.bundle import load_bundle, make_random_bundle, update_manifest
    from ml.data.synthetic import make_phantom
    from ml.predict import classify, predict_bundle

    path = make_random_bundle(tmp_path, "cal", "simple_cnn", task="classification")
    x = np.stack([make_phantom(i, 64).image for i in range(3)])[..., None].astype(np.float32)
    plain = predict_bundle(load_bundle(path), x)
    raw_status, raw_stage = classify(load_bundle(path).model, x)
    assert np.allclose(plain["p_status"], raw_status)  # uncalibrated: the model's own numbers

    record = _record(2.0, 0.5)
    update_manifest(path, {"calibration": record.model_dump(mode="json")})
    bundle = load_bundle(path)
    assert bundle.manifest.temperature("binary") == record.binary.temperature
    out = predict_bundle(bundle, x)
    assert np.allclose(out["p_status"], apply_temperature(raw_status, record.binary.temperature))
    assert np.allclose(out["p_stage"], apply_temperature(raw_stage, record.stage.temperature))
    assert not np.allclose(out["p_status"], raw_status)
    assert (
        json.loads((path / "manifest.json").read_text())["calibration"]["method"] == "temperature"
    )


def test_calibrate_a_shipped_bundle_on_the_real_split(tmp_path: Path):
    """A shipped classifier, refitted on its own validation subjects of the real dataset."""
    pytest.importorskip("keras")
    from ml.bundle import read_manifest
    from ml.evaluation.calibrate import calibrate_bundle
    from tests.ml.test_shipped_bundles import DATASET, MODELS

    if not (DATASET / "annotations" / "dataset.csv").is_file():
        pytest.skip(f"needs the prepared real dataset at {DATASET} (make prepare)")
    dst = tmp_path / "harmonized_ordinal"
    shutil.copytree(MODELS / "harmonized_ordinal", dst)
    run = calibrate_bundle(dst, DATASET)
    rec = read_manifest(dst).calibration
    assert rec is not None and rec == run.record
    assert rec.n_eval == 135 and rec.n_fit > 0
    for head in ("binary", "stage"):
        assert (dst / "plots" / f"reliability_{head}.png").read_bytes()[:4] == b"\x89PNG"
        h = getattr(rec, head)
        assert h.nll_after <= h.nll_before + 0.05  # fitted on other images: no large loss


def test_calibrate_cli(synthetic_dataset, tmp_path: Path):
    pytest.importorskip("keras")
    from ml.bundle import make_random_bundle, read_manifest
    from ml.cli import main

    make_random_bundle(tmp_path, "cal", "simple_cnn", task="classification")
    make_random_bundle(tmp_path, "seg", "attention_unet_lite", task="segmentation")
    args = ["evaluate", "--calibrate", "--dataset", str(synthetic_dataset)]
    assert main([*args, "--models-dir", str(tmp_path)]) == 0
    rec = read_manifest(tmp_path / "cal").calibration
    assert rec is not None and rec.n_fit > 0 and rec.binary.temperature > 0
    assert read_manifest(tmp_path / "seg").calibration is None  # segmenters are left alone
    assert (tmp_path / "cal" / "plots" / "reliability_stage.png").is_file()
    assert main(["evaluate", "--calibrate", "--models-dir", str(tmp_path)]) == 2  # no dataset
