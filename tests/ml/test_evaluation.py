"""Evaluation: metric definitions, reports, and evaluate on a bundle (manifest stays valid)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")

from ml.bundle import load_bundle, make_random_bundle, read_manifest  # noqa: E402
from ml.cli import main as cli_main  # noqa: E402
from ml.evaluation.evaluate import evaluate_bundle, resolve_model  # noqa: E402
from ml.evaluation.metrics import (  # noqa: E402
    classification_metrics,
    head_report,
    segmentation_metrics,
)
from ml.metrics import DiceScore, IoUScore, dice_per_image, iou_per_image  # noqa: E402


def test_per_image_overlap_scores():
    target = np.zeros((3, 4, 4), np.float32)
    pred = np.zeros((3, 4, 4), np.float32)
    target[0, :2] = 1
    pred[0, :1] = 1  # half of the target
    target[1, 0, 0] = 1  # missed entirely
    # image 2: both empty -> 1
    np.testing.assert_allclose(iou_per_image(pred, target), [0.5, 0.0, 1.0])
    np.testing.assert_allclose(dice_per_image(pred, target), [2 / 3, 0.0, 1.0])
    iou = IoUScore()
    iou.update_state(target[..., None], pred[..., None])
    assert float(iou.result()) == pytest.approx(0.5)
    dice = DiceScore()
    dice.update_state(target[..., None], pred[..., None])
    assert float(dice.result()) == pytest.approx((2 / 3 + 1) / 3)


def test_segmentation_metrics_per_source():
    target = np.zeros((2, 4, 4, 1), np.float32)
    target[:, :2] = 1
    prob = np.concatenate([target[:1] * 0.9, np.zeros_like(target[:1])])[..., 0]
    summary, per_image = segmentation_metrics(target, prob, np.array(["a", "b"]))
    assert summary["iou"] == 0.5 and summary["per_source"]["a"]["iou"] == 1.0
    assert summary["iou_pooled"] == 0.5
    np.testing.assert_allclose(per_image["iou"], [1.0, 0.0])


def test_classification_report():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    r = head_report(y, proba, ["negative", "positive"])
    assert r["accuracy"] == 0.75
    assert r["confusion_matrix"] == [[1, 1], [0, 2]]
    assert r["per_class"]["positive"]["recall"] == 1.0
    assert r["per_class"]["negative"]["precision"] == 1.0
    assert r["roc_auc"] == 1.0
    stage = np.array([0, 0, 1, 3])
    p_stage = np.eye(4)[[0, 1, 1, 3]]
    m = classification_metrics(y, stage, proba, p_stage, np.array(["s", "s", "t", "t"]))
    assert m["stage_accuracy"] == 0.75 and m["early_recall"] == 1.0
    assert m["stage"]["per_class"]["Moderate"]["support"] == 0
    assert m["per_source"]["t"]["stage_accuracy"] == 1.0
    single = head_report(np.zeros(3, int), np.full((3, 2), 0.5), ["negative", "positive"])
    assert single["roc_auc"] is None


@pytest.mark.parametrize("architecture", ["simple_cnn", "attention_unet_lite"])
def test_evaluate_writes_metrics_and_keeps_bundle_valid(synthetic_dataset, tmp_path, architecture):
    path = make_random_bundle(tmp_path, "m", architecture)
    before = read_manifest(path).weights.sha256
    block = evaluate_bundle("m", synthetic_dataset, models_dir=tmp_path)
    assert block["split"] == "test" and block["n"] > 0
    bundle = load_bundle(path)
    assert bundle.manifest.weights.sha256 == before
    assert bundle.manifest.metrics.model_dump(exclude_none=True) == {
        k: v for k, v in block.items() if v is not None
    }
    report = (path / "REPORT.md").read_text()
    assert "Research use only" in report
    assert (path / "README.md").is_file() and (path / "metrics_per_image.csv").is_file()
    if architecture == "simple_cnn":
        assert (path / "plots" / "confusion_binary.png").read_bytes()[:4] == b"\x89PNG"
        assert "## Stage" in report
    again = evaluate_bundle(path, synthetic_dataset, write=False)
    assert {k: v for k, v in again.items() if k != "evaluated"} == {
        k: v for k, v in block.items() if k != "evaluated"
    }


def test_evaluate_cli_errors(tmp_path, synthetic_dataset, capsys):
    assert cli_main(["evaluate", "--model", "nope", "--dataset", str(synthetic_dataset),
                     "--models-dir", str(tmp_path)]) == 2  # fmt: skip
    assert "no bundle" in capsys.readouterr().err
    path = make_random_bundle(tmp_path, "k", "simple_cnn")
    (path / "model.weights.h5").write_bytes(b"garbage")
    assert cli_main(["evaluate", "--model", str(path), "--dataset", str(synthetic_dataset)]) == 2
    assert "does not match the manifest" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        resolve_model(tmp_path / "missing")
