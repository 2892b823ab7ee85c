"""The applicability domain: the shipped reference flags non-lumbar images (>= 95 %) and lets
held-out lumbar slices through (at most 2 % flagged); fitting and scoring on phantoms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.domain import REFERENCE_FILE, DomainReference, assess, fit_reference, image_features
from tests.domain_corpus import corpus

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / REFERENCE_FILE


@pytest.fixture(scope="module")
def shipped() -> DomainReference:
    if not SHIPPED.is_file():
        pytest.skip("no domain reference in models/ (spondyscan domain fit)")
    return DomainReference.load(SHIPPED)


def test_shipped_reference_flags_non_lumbar_images(shipped: DomainReference) -> None:
    items = list(corpus())
    assert len(items) >= 100, len(items)
    missed = [name for name, image in items if shipped.score(image).in_domain]
    flagged = 1 - len(missed) / len(items)
    assert flagged >= 0.95, (f"{flagged:.3f} flagged", missed)


def test_shipped_reference_lets_held_out_lumbar_slices_in(shipped: DomainReference) -> None:
    from tests.conftest import SHARED_DATA
    from tests.ml.test_shipped_bundles import DATASET

    source = SHARED_DATA / "lumbar_mri"
    if not (DATASET / "annotations" / "dataset.csv").is_file():
        if not (source / "slices.csv").is_file():
            pytest.skip(f"needs the real data at {source} (absent on a fresh clone)")
        pytest.skip("var/dataset is not prepared (make prepare)")
    from ml.data.dataset import load_split

    test = load_split(DATASET, "test")
    assert shipped.info["dataset_hash"] == test.dataset_hash  # fitted on this dataset's train
    features = np.stack([image_features(img) for img in test.images[..., 0]])
    flagged = np.mean([not s.in_domain for s in shipped.score_features(features)])
    assert flagged <= 0.02, flagged


def test_fit_and_score_on_phantoms(tmp_path: Path) -> None:
    from ml.data.synthetic import make_phantom

    phantoms = np.stack([make_phantom(seed).image for seed in range(60)]).astype(np.float32)
    reference = fit_reference(phantoms[:50], components=8, info={"split": "phantoms"})
    path = tmp_path / REFERENCE_FILE
    path.write_bytes(reference.to_bytes())
    loaded = DomainReference.load(path)
    inside = [loaded.score(p).in_domain for p in phantoms[50:]]
    assert np.mean(inside) >= 0.8
    noise = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    far = loaded.score(noise)
    assert not far.in_domain and far.score > 1.0
    block = assess(far, modality="MR", column_found=False)
    assert block["in_domain"] is False and len(block["reasons"]) == 2
    assert assess(loaded.score(phantoms[55]), modality="CT")["in_domain"] is False
    assert assess(None)["in_domain"] is True and "no reference" in assess(None)["reasons"][0]
