"""`spondyscan analyze` on a whole series (folder, zip, NIfTI) with local bundles, and the
volume evaluation (3D Dice, IoU, HD95) of `spondyscan evaluate --volumes`."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ml.cli import main as spondyscan
from ml.data.synthetic_series import dicom_series, nifti_volume, phantom_series
from ml.evaluation.volume import hd95, volume_metrics
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


def _nifti(path: Path):  # noqa: ANN202 - a nibabel image
    import nibabel as nib

    return nib.Nifti1Image.from_bytes(gzip.decompress(path.read_bytes()))


@pytest.fixture(scope="module")
def series():  # noqa: ANN201 - a PhantomSeries
    return phantom_series(14, 96, seed=2)


def _run(source: Path, out: Path) -> dict:
    code = spondyscan(
        ["analyze", str(source), "--out", str(out), "--models", "harmonized_ordinal",
         "--models-dir", str(MODELS), "--key-slices", "5"]
    )  # fmt: skip
    assert code == 0
    return json.loads((out / "study.json").read_text())


def test_folder_zip_and_volume_give_one_study(tmp_path: Path, series) -> None:  # noqa: ANN001
    from ml.series import scan_dicom

    files = dicom_series(series, seed=2, compressed=True)
    folder = tmp_path / "series"
    folder.mkdir()
    for name, data in files:
        (folder / name).write_bytes(data)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in files:
            zf.writestr(f"study/{name}", data)
    volume = tmp_path / "volume.nii.gz"
    volume.write_bytes(nifti_volume(series))

    a = _run(folder, tmp_path / "a")
    b = _run(archive, tmp_path / "b")
    c = _run(volume, tmp_path / "c")
    assert a["input"]["slices"] == b["input"]["slices"] == c["input"]["slices"] == 14
    assert a["key_slices"] == b["key_slices"] == c["key_slices"]
    assert len(a["key_slices"]) <= 5
    assert [m["model"] for m in a["models"]] == ["harmonized_ordinal"] or not a["key_slices"]
    assert all("p_positive" in s for s in a["slices"])
    # The mask is on each input's grid: the DICOM series' affine, or the NIfTI's own.
    assert np.allclose(_nifti(tmp_path / "a" / "mask.nii.gz").affine, scan_dicom(files).affine())
    assert np.allclose(_nifti(tmp_path / "c" / "mask.nii.gz").affine, _nifti(volume).affine)
    for name in ("key_slices.png", "probability.png"):
        assert (tmp_path / "a" / name).read_bytes()[:4] == b"\x89PNG"
    # The phantoms are not like the training slices: the study says so.
    assert a["in_domain"] is False


def test_unsafe_zip_is_refused(tmp_path: Path, series, capsys) -> None:  # noqa: ANN001
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.dcm", dicom_series(series)[0][1])
    code = spondyscan(["analyze", str(archive), "--out", str(tmp_path / "o"),
                       "--models-dir", str(MODELS)])  # fmt: skip
    assert code != 0 and "unsafe" in capsys.readouterr().err


def test_volume_metrics_known_values() -> None:
    ref = np.zeros((10, 20, 20), bool)
    ref[2:8, 5:15, 5:15] = True
    assert volume_metrics(ref, ref, (1.0, 1.0, 1.0)) | {"voxels_predicted": 0} == {
        "dice": 1.0,
        "iou": 1.0,
        "hd95_mm": 0.0,
        "voxels_predicted": 0,
        "voxels_reference": int(ref.sum()),
    }
    shifted = np.roll(ref, 2, axis=2)  # 2 voxels along the columns
    m = volume_metrics(shifted, ref, (1.0, 1.0, 1.0))
    assert m["iou"] == pytest.approx(8 / 12, abs=1e-3) and m["dice"] == pytest.approx(0.8, abs=1e-3)
    assert m["hd95_mm"] == pytest.approx(2.0)
    # Spacing is in millimetres: 3 mm columns make the same shift 6 mm.
    assert hd95(shifted, ref, (1.0, 1.0, 3.0)) == pytest.approx(6.0)
    assert hd95(np.zeros_like(ref), ref, (1.0, 1.0, 1.0)) is None


def _case(root: Path, series, name: str, source: str) -> Path:  # noqa: ANN001
    import nibabel as nib

    case = root / name
    case.mkdir(parents=True)
    (case / "volume.nii.gz").write_bytes(nifti_volume(series))
    img = _nifti(case / "volume.nii.gz")
    mask = np.transpose(series.mask, (2, 1, 0)).astype(np.uint8)
    (case / "mask.nii.gz").write_bytes(gzip.compress(nib.Nifti1Image(mask, img.affine).to_bytes()))
    (case / "case.json").write_text(json.dumps({"source": source, "structure": "vertebral_body"}))
    return case


def test_evaluate_volumes_cli(tmp_path: Path, series, capsys) -> None:  # noqa: ANN001
    _case(tmp_path / "cases", series, "phantom-01", "phantom")
    _case(tmp_path / "cases", phantom_series(10, 96, seed=5), "phantom-02", "phantom")
    out = tmp_path / "volumes.json"
    code = spondyscan(
        ["evaluate", "--model", "attention_unet_lite", "--models-dir", str(MODELS),
         "--volumes", str(tmp_path / "cases"), "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["cases"] == 2 and set(report["per_case"]) == {"phantom-01", "phantom-02"}
    assert report["per_source"]["phantom"]["cases"] == 2
    for c in report["per_case"].values():
        assert 0.0 <= c["dice"] <= 1.0 and c["voxels_reference"] > 0
    assert "Dice" in capsys.readouterr().out
    # A classifier is not a segmenter; a folder without cases is named.
    assert spondyscan(["evaluate", "--model", "harmonized_ordinal", "--models-dir", str(MODELS),
                       "--volumes", str(tmp_path / "cases")]) != 0  # fmt: skip
    assert spondyscan(["evaluate", "--model", "attention_unet_lite", "--models-dir", str(MODELS),
                       "--volumes", str(tmp_path)]) != 0  # fmt: skip


@pytest.mark.skipif(
    not (SHARED_DATA / "studies" / "chu-03" / "mask.nii.gz").is_file(),
    reason=f"the real studies are not at {SHARED_DATA / 'studies'} (a fresh clone has none)",
)
def test_default_segmenter_on_the_real_studies(tmp_path: Path) -> None:
    out = tmp_path / "volumes.json"
    code = spondyscan(
        ["evaluate", "--model", "attention_unet_lite", "--models-dir", str(MODELS),
         "--volumes", str(SHARED_DATA / "studies"), "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["cases"] == 5
    bodies = [c for c in report["per_case"].values() if c["structure"] == "vertebral_body"]
    # The segmenter was trained on vertebral-body masks: 3D Dice on those cases.
    assert len(bodies) == 4 and np.mean([c["dice"] for c in bodies]) > 0.8
    assert all(c["hd95_mm"] is not None for c in bodies)
