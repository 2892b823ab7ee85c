"""``spondyscan analyze``: the whole pipeline from the console script, two models side by side."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("keras")


def test_analyze_two_models_side_by_side(tmp_path, capsys):
    from ml.bundle import make_random_bundle
    from ml.cli import main
    from ml.data.synthetic import make_phantom

    models = tmp_path / "models"
    make_random_bundle(models, "cls_a", "simple_cnn", default=True, seed=1)
    make_random_bundle(models, "cls_b", "simple_cnn", label_source="clinical", seed=2)
    make_random_bundle(models, "seg", "attention_unet_lite", default=True)
    image = tmp_path / "slice.png"
    cv2.imwrite(str(image), np.rint(make_phantom(3, 128).image * 255).astype(np.uint8))
    out = tmp_path / "out"

    rc = main(["analyze", str(image), "--models", "cls_a,cls_b", "--models-dir", str(models),
               "--no-faithfulness", "--out", str(out)])  # fmt: skip

    assert rc == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert set(analysis["models"]) == {"cls_a", "cls_b"}
    assert analysis["segmentation_model"]["model"] == "seg"
    provenance = {k: v["label_provenance"]["label_source"] for k, v in analysis["models"].items()}
    assert provenance == {"cls_a": "feature_rule_v2", "cls_b": "clinical"}
    for key in ("cls_a", "cls_b"):
        assert (out / key / "heatmap.png").stat().st_size > 0
        assert analysis["models"][key]["focus"] in ("segmentation", "box")
    printed = capsys.readouterr().out
    assert "Research use only" in printed and "clinical" in printed


def test_analyze_without_classifiers_is_a_clear_error(tmp_path, capsys):
    from ml.cli import main

    (tmp_path / "models").mkdir()
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.full((8, 8), 7, np.uint8))
    rc = main(["analyze", str(image), "--models-dir", str(tmp_path / "models"),
               "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 2
    assert "no classification bundle" in capsys.readouterr().err
