"""``spondyscan explain``: overlays and summary.json from random-weight bundles."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest

pytest.importorskip("keras")

from ml import RESEARCH_USE_NOTICE  # noqa: E402
from ml.clierror import CliError  # noqa: E402
from ml.explain import cli  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from ml.bundle import make_random_bundle
    from ml.data.synthetic import make_phantom

    root = tmp_path_factory.mktemp("explain_cli")
    models = root / "models"
    make_random_bundle(models, "cls", "simple_cnn", label_source="clinical")
    make_random_bundle(models, "seg", "attention_unet", default=True)
    image = root / "slice.png"
    cv2.imwrite(str(image), np.rint(make_phantom(0, 96).image * 255).astype(np.uint8))
    return root, models, image


def _run(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def test_classifier_with_segmentation_focus(setup, capsys):
    root, models, image = setup
    out = root / "out_cls"
    argv = [str(image), "--model", "cls", "--models-dir", str(models), "--head", "stage"]
    argv += ["--method", "gradcam++", "--focus", "segmentation", "--out", str(out)]
    assert _run(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["notice"] == RESEARCH_USE_NOTICE
    assert summary["label_provenance"]["label_source"] == "clinical"
    assert summary["head"] == "stage_output" and summary["method"] == "gradcam++"
    assert summary["class_name"] in ["Normal", "Early", "Moderate", "Advanced"]
    assert summary["segmentation_model"]["model"] == "seg"
    assert summary["focus"] in ("segmentation", "box")  # box when the random mask is empty
    assert 0.0 <= summary["inside_fraction"] <= 1.0
    faith = summary["faithfulness"]
    assert -1 <= faith["score"] <= 1 and faith["interpretation"].endswith(".")
    for name in summary["files"]:
        assert (out / name).is_file()
    heat = cv2.imread(str(out / "heatmap.png"))
    assert heat.shape == (64, 64, 3)
    assert "Research use only" in capsys.readouterr().out


def test_segmentation_model_by_path(setup):
    root, models, image = setup
    out = root / "out_seg"
    assert _run([str(image), "--model", str(models / "seg"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "segmentation" and summary["faithfulness"] is None
    assert set(summary["segmentation"]) >= {"area_pixels", "mean_prob_inside", "uncertain_fraction"}
    assert (out / "probability.png").is_file() and (out / "segmentation.png").is_file()


def test_user_errors(setup):
    root, models, image = setup
    with pytest.raises(CliError, match="no model bundle"):
        _run([str(image), "--model", "nope", "--models-dir", str(models), "--out", str(root)])
    with pytest.raises(CliError, match="no such file"):
        _run([str(root / "x.png"), "--model", "cls", "--models-dir", str(models), "--out", "o"])
    with pytest.raises(CliError, match="attention"):
        _run([str(image), "--model", str(models / "cls"), "--method", "attention", "--out", "o"])
    blank = root / "blank.png"
    cv2.imwrite(str(blank), np.zeros((16, 16), np.uint8))
    with pytest.raises(CliError, match="blank"):
        _run([str(blank), "--model", str(models / "cls"), "--out", str(root / "o")])
