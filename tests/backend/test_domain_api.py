"""The applicability domain through the API: images the models do not know are flagged, their
classifier outputs withheld unless asked for; non-MR DICOM refused; real series in the domain."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from study_helpers import StudyEnv, parts, wait_study

from tests.conftest import SHARED_DATA

STUDIES = SHARED_DATA / "studies"
requires_studies = pytest.mark.skipif(
    not (STUDIES / "myosegmentum-01" / "mask.nii.gz").is_file(),
    reason=f"the real studies are not at {STUDIES} (a fresh clone has no ../shared)",
)


def _testdata(name: str) -> bytes:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom's test file {name} is not installed")
    return Path(path).read_bytes()


async def test_brain_mr_is_flagged_and_its_outputs_withheld(senv: StudyEnv) -> None:
    brain = _testdata("MR2_J2KI.dcm")
    r = await senv.client.post(
        "/classify", headers=senv.alice, **parts([("brain.dcm", brain)], "file")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["domain"]["in_domain"] is False and body["domain"]["score"] > 1.0
    assert any("training slices" in reason for reason in body["domain"]["reasons"])
    assert body["withheld"] is True and body["classifications"] == []
    # Asked for anyway: the outputs are there, still flagged.
    r = await senv.client.post(
        "/classify",
        headers=senv.alice,
        **parts([("brain.dcm", brain)], "file", allow_out_of_domain=True),
    )
    body = r.json()
    assert body["withheld"] is False and len(body["classifications"]) == 1
    assert body["domain"]["in_domain"] is False
    # The full pipeline withholds classifications and explanations the same way.
    r = await senv.client.post(
        "/analyses", headers=senv.alice, **parts([("brain.dcm", brain)], "file")
    )
    body = r.json()
    assert body["withheld"] is True
    assert body["classifications"] == [] and body["explanations"] == []
    assert body["segmentation"] is not None


async def test_noise_png_is_flagged(senv: StudyEnv) -> None:
    from PIL import Image

    noise = (np.random.default_rng(0).random((256, 256)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    r = await senv.client.post(
        "/explain", headers=senv.alice, **parts([("noise.png", buf.getvalue())], "file")
    )
    body = r.json()
    assert body["domain"]["in_domain"] is False and body["withheld"] is True
    assert body["explanation"] is None


async def test_ct_dicom_is_refused(senv: StudyEnv) -> None:
    ct = _testdata("CT_small.dcm")
    for path in ("/classify", "/analyses"):
        r = await senv.client.post(path, headers=senv.alice, **parts([("ct.dcm", ct)], "file"))
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "unsupported_modality"


async def test_held_out_lumbar_slice_is_in_the_domain(senv: StudyEnv) -> None:
    from tests.ml.test_shipped_bundles import DATASET

    if not (DATASET / "annotations" / "dataset.csv").is_file():
        pytest.skip(f"no prepared dataset at {DATASET} (make prepare; needs ../shared)")
    from ml.data.dataset import load_split

    test = load_split(DATASET, "test")
    buf = io.BytesIO()
    np.save(buf, test.images[0, ..., 0])
    r = await senv.client.post(
        "/classify", headers=senv.alice, **parts([("s.npy", buf.getvalue())], "file")
    )
    body = r.json()
    assert body["domain"]["in_domain"] is True and body["withheld"] is False
    assert len(body["classifications"]) == 1


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@requires_studies
@pytest.mark.parametrize("case", ["myosegmentum-01", "zukic-04"])
async def test_real_series_in_domain_with_a_good_3d_mask(senv: StudyEnv, case: str) -> None:
    import nibabel as nib

    folder = STUDIES / case
    files = [(p.name, p.read_bytes()) for p in sorted((folder / "dicom").iterdir())]
    r = await senv.client.post("/studies", headers=senv.alice, **parts(files))
    assert r.status_code == 202, r.text
    study = await wait_study(senv.client, r.json()["id"], senv.alice, timeout=300)
    assert study["status"] == "done", study
    result = study["result"]
    assert result["domain"]["in_domain"] is True and result["withheld"] is False
    assert result["models"] and len(result["segmentation"]["key_slices"]) >= 3
    mask_r = await senv.client.get(study["mask_url"], headers=senv.alice)
    ours = nib.Nifti1Image.from_bytes(gzip.decompress(mask_r.content))
    ref = nib.load(str(folder / "mask.nii.gz"))
    # The mask lies on the input's grid: in the same world space as the expert mask (the
    # series' slices are stored in the order along their normal, the reference's in its own).
    ours, ref = nib.as_closest_canonical(ours), nib.as_closest_canonical(ref)
    assert np.allclose(ours.affine[:3, :3], ref.affine[:3, :3], atol=1e-3)
    offset = np.round(np.linalg.solve(ref.affine, ours.affine[:, 3])[:3]).astype(int)
    a, b = np.asarray(ours.dataobj) > 0, np.asarray(ref.dataobj) > 0
    # Our voxel (0, 0, 0) is the reference's voxel ``offset`` (0 unless the grids' extents
    # differ, as zukic-04's mask has one slice more than its series).
    assert (offset >= 0).all()
    b = b[tuple(slice(o, o + n) for o, n in zip(offset, a.shape, strict=True))]
    assert a.shape == b.shape
    assert _dice(a, b) > 0.8


async def test_batch_jobs_withhold_and_say_so(senv: StudyEnv) -> None:
    import csv

    from jobs_helpers import wait_job
    from PIL import Image

    noise = (np.random.default_rng(1).random((256, 256)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    files = [("noise.png", buf.getvalue())]
    for allow in (False, True):
        r = await senv.client.post(
            "/jobs",
            headers=senv.alice,
            **parts(files, explain=False, allow_out_of_domain=allow),
        )
        assert r.status_code == 202, r.text
        job = await wait_job(senv.client, r.json()["id"], senv.alice)
        (item,) = job["items"]
        assert item["status"] == "done" and item["result"]["in_domain"] is False
        assert item["result"]["withheld"] is (not allow)
        assert bool(item["result"]["classifications"]) is allow
        text = (await senv.client.get(f"/jobs/{job['id']}/results.csv", headers=senv.alice)).text
        (row,) = list(csv.DictReader(io.StringIO(text)))
        assert row["in_domain"] == "false" and row["withheld"] == str(not allow).lower()
