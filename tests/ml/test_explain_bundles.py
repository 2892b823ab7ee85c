"""Heatmaps are finite, in [0, 1] and image-sized for every architecture (and shipped bundle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from ml.bundle import discover_bundles, load_bundle, make_random_bundle  # noqa: E402
from ml.explain import explain_image, json_summary, warm_up  # noqa: E402
from ml.models import ARCHITECTURES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = discover_bundles(ROOT / "models")


def _check_bundle(bundle, plan, faithfulness=False):
    """Explain a random and a blank image for each (method, head) in ``plan``."""
    size = int(bundle.model.inputs[0].shape[1])
    rng = np.random.default_rng(0)
    images = {"random": rng.random((size, size)).astype(np.float32), "blank": np.zeros((size,) * 2)}
    for name, image in images.items():
        for method, head in plan:
            res = explain_image(
                bundle,
                image.astype(np.float32),
                head=head,
                method=method,
                focus="box",
                faithfulness=faithfulness and name == "random" and method == "gradcam",
            )
            for key in ("heatmap", "focused_heatmap"):
                hm = res["arrays"][key]
                where = f"{bundle.key} {method} {head} {name} {key}"
                assert hm.shape == (size, size), where
                assert np.isfinite(hm).all(), where
                assert hm.min() >= 0.0 and hm.max() <= 1.0, where
            assert 0.0 <= res["inside_fraction"] <= 1.0
            if res["faithfulness"]:
                assert -1.0 <= res["faithfulness"]["score"] <= 1.0
            json_summary(res)  # JSON part has no arrays


# Eigen-CAM needs a second compiled function per model; it only sees the activations of the
# Grad-CAM layer, and the hybrids share their backbone up to it, so one hybrid covers all three.
EIGENCAM = {"simple_cnn", "hybrid_v2", "attention_unet"}


def _plan(bundle, eigencam=True):
    if bundle.task == "segmentation":
        plan = [("gradcam", None), ("gradcam++", None)]
    else:
        # Grad-CAM and Grad-CAM++ share one compiled function per head.
        plan = [(m, h) for h in ("binary_output", "stage_output") for m in ("gradcam", "gradcam++")]
    if eigencam:  # gradient-free: a second compiled function, tried on one head
        plan.append(("eigencam", plan[0][1]))
    if bundle.manifest.attention_layers:
        plan.append(("attention", "binary_output"))
    return plan


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_random_bundles_of_every_architecture(tmp_path, architecture):
    bundle = load_bundle(make_random_bundle(tmp_path, architecture, architecture))
    if architecture == "simple_cnn":
        warm_up(bundle)  # traces what the checks below reuse
    plan = _plan(bundle, eigencam=architecture in EIGENCAM)
    _check_bundle(bundle, plan, faithfulness=architecture == "simple_cnn")


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED, reason="no shipped bundles under models/")
@pytest.mark.parametrize("bundle_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_bundles(bundle_dir):
    bundle = load_bundle(bundle_dir)
    if bundle.task == "classification":
        assert bundle.manifest.gradcam_layer
    _check_bundle(bundle, _plan(bundle), faithfulness=bundle.task == "classification")
