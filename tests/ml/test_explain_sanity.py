"""Model parameter randomisation (Adebayo et al., 2018): an explanation must depend on the weights.

Every shipped classifier's default explanation method is run on synthetic phantoms with the
trained weights and with a randomised copy of the same architecture; the two sets of maps must
differ clearly (mean Spearman rank correlation below 0.5). The check itself is shown to fail for
a "method" that only looks at the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from ml.bundle import build_for_manifest, discover_bundles, load_bundle, read_manifest  # noqa: E402
from ml.data.synthetic import make_phantom  # noqa: E402
from ml.explain.gradcam import compute_cam  # noqa: E402
from ml.explain.sanity import (  # noqa: E402
    compare_maps,
    parameter_randomisation,
    spearman,
    top_overlap,
)

ROOT = Path(__file__).resolve().parents[2]
CLASSIFIERS = [
    p for p in discover_bundles(ROOT / "models") if read_manifest(p).task == "classification"
]
# Above this mean rank correlation a map mostly shows the image, not what the model learned.
SAME_MAP = 0.5


def _phantoms(n: int = 4, size: int = 256) -> np.ndarray:
    return np.stack([make_phantom(s, size).image for s in range(n)])[..., None].astype(np.float32)


def test_similarity_measures():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.zeros_like(a)) == 0.0  # nothing to rank
    assert top_overlap(a, a) == pytest.approx(1.0)
    assert top_overlap(a, np.zeros_like(a)) == 0.0
    b = rng.random((32, 32))
    assert abs(spearman(a, b)) < 0.2  # independent maps
    with pytest.raises(ValueError, match="shapes differ"):
        compare_maps(a[None], b[None, :16])


def test_check_flags_a_map_that_ignores_the_model():
    """An "explanation" that is just the image is the same for any weights: the check says so."""
    import keras

    def build():
        inp = keras.Input((32, 32, 1))
        x = keras.layers.Conv2D(4, 3, padding="same")(inp)
        return keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))

    images = np.random.default_rng(1).random((3, 32, 32, 1)).astype(np.float32)
    report = parameter_randomisation(build(), build, images, lambda _m, x: x[..., 0])
    assert report.mean_spearman == pytest.approx(1.0)
    assert report.mean_top_overlap == pytest.approx(1.0)


@pytest.mark.skipif(not CLASSIFIERS, reason="no classifier bundles under models/")
@pytest.mark.parametrize("path", CLASSIFIERS, ids=lambda p: p.name)
def test_default_method_depends_on_the_trained_weights(path):
    bundle = load_bundle(path)
    manifest = bundle.manifest
    method = manifest.default_method
    size = manifest.input.size
    images = _phantoms(size=size)

    def explain(model, x):
        return compute_cam(model, x, manifest.gradcam_layer, "binary_output", None, method).heatmaps

    report = parameter_randomisation(
        bundle.model, lambda: build_for_manifest(manifest), images, explain, seed=1
    )
    assert report.mean_spearman < SAME_MAP, (
        f"{path.name}/{method}: maps of a randomised copy correlate {report.mean_spearman:.2f} "
        "with the trained model's"
    )
