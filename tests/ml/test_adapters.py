"""Ingest adapters: the Kaggle layout, lumbar_mri, plain folders (DICOM, NIfTI, ...), labels CSV."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ml.clierror import CliError
from ml.data import adapters
from ml.data import prepare as prep
from ml.data.dataset import read_rows
from ml.data.synthetic import make_phantom, write_synthetic_source
from tests.conftest import SHARED_DATA

KAGGLE_COORDS = SHARED_DATA / "kaggle_lumbar_coords" / "coords_pretrain.csv"
NIFTI = SHARED_DATA / "nifti" / "sct_t2_cervical.nii.gz"


def dicom_file(name: str) -> Path:
    """A pydicom / pydicom-data test file that is on disk (never downloaded)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None or not Path(path).is_file():
        pytest.skip(f"{name} is not shipped locally by pydicom or pydicom-data")
    return Path(path)


@pytest.mark.parametrize(
    ("stem", "source", "subject"),
    [
        ("1_t2", "spider", "spider-1"),
        ("12_t2_SPACE", "spider", "spider-12"),
        ("0001", "lsd", "lsd-0001"),
        ("case_0000", "tseg", "tseg-case_0000"),
        ("ID02", "osf", "osf-ID02"),
        ("02_s16", "chu", "chu-02"),
        ("patient7_T1_slice12", "", "patient7"),
    ],
)
def test_subject_from_filename(stem, source, subject):
    assert adapters.subject_from_filename(stem, source) == subject


# ------------------------------------------------------------------------------------- Kaggle


@pytest.fixture(scope="module")
def kaggle_placeholder(tmp_path_factory) -> Path:
    """The real coords_pretrain.csv with a tiny placeholder .npy for each of its images."""
    if not KAGGLE_COORDS.is_file():
        pytest.skip(f"real Kaggle coordinates not found at {KAGGLE_COORDS}")
    root = tmp_path_factory.mktemp("kaggle")
    shutil.copy(KAGGLE_COORDS, root / "coords_pretrain.csv")
    with open(KAGGLE_COORDS, newline="") as fh:
        images = sorted({(r["filename"], r["source"]) for r in csv.DictReader(fh)})
    tile = np.arange(64, dtype=np.uint8).reshape(8, 8)
    for name, source in images:
        d = root / f"processed_{source}"
        d.mkdir(exist_ok=True)
        np.save(d / f"{name[:-4]}.npy", tile)
    return root


@pytest.mark.shared
def test_kaggle_real_coordinates(kaggle_placeholder):
    scan = adapters.scan_kaggle(kaggle_placeholder, include_ct=True)
    assert len(scan.items) == 1121
    assert all(len(it.points) == 5 for it in scan.items)
    assert {lv for it in scan.items for lv in it.points} == {
        "L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"
    }  # fmt: skip
    assert {it.source for it in scan.items} == {"spider", "lsd", "tseg", "osf"}
    assert all(0 <= x <= 1 and 0 <= y <= 1 for it in scan.items for x, y in it.points.values())
    spider = [it.subject_id for it in scan.items if it.source == "spider"]
    assert "spider-1" in spider and len(set(spider)) == len(spider)  # only the t2 series
    assert not scan.skipped and not scan.notes
    # tseg is CT: excluded by default, and reported.
    default = adapters.scan_kaggle(kaggle_placeholder)
    n_tseg = sum(it.source == "tseg" for it in scan.items)
    assert len(default.items) == 1121 - n_tseg
    assert len(default.skipped) == n_tseg and all("CT" in r for _, r in default.skipped)


@pytest.mark.shared
def test_kaggle_mismatches_are_reported_not_fatal(kaggle_placeholder, tmp_path):
    root = tmp_path / "k"
    shutil.copytree(kaggle_placeholder, root)
    (root / "processed_lsd" / "0001.npy").unlink()  # a row without an image
    np.save(root / "processed_osf" / "extra_scan.npy", np.ones((8, 8)))  # an image without rows
    scan = adapters.scan_kaggle(root)
    reasons = dict(scan.skipped)
    assert reasons["processed_osf/extra_scan.npy"].startswith("no rows in coords_pretrain.csv")
    assert reasons["lsd/0001.jpg"] == "row in coords_pretrain.csv without an image file"
    assert any("1 coordinate entries have no image" in n for n in scan.notes)


def test_kaggle_layout_end_to_end(synthetic_source, tmp_path):
    """--source kaggle on a Kaggle-layout folder: points -> ROI masks, subjects from slices.csv."""
    args = ["--source", "kaggle", str(synthetic_source), "--out", str(tmp_path / "ds")]
    parser = __import__("argparse").ArgumentParser()
    prep.add_arguments(parser)
    assert prep.run(parser.parse_args(args)) == 0
    rows = read_rows(tmp_path / "ds")[0]
    assert len(rows) == 48 and {r["mask_kind"] for r in rows} == {"roi"}
    assert rows[0]["subject_id"].startswith(rows[0]["source"] + "-")
    train = {r["subject_id"] for r in rows if r["split"] == "train"}
    assert not train & {r["subject_id"] for r in rows if r["split"] == "test"}


def test_kaggle_jpg_fallback_3d_volumes_and_subjects(tmp_path):
    root = tmp_path / "k"
    (root / "processed_spider").mkdir(parents=True)
    (root / "processed_lsd_jpgs").mkdir(parents=True)
    ph = make_phantom(0)
    u8 = np.rint(ph.image * 255).astype(np.uint8)
    volume = np.stack([np.zeros_like(u8), u8, np.zeros_like(u8)])  # sagittal slices first
    np.save(root / "processed_spider" / "1_t2.npy", volume)
    cv2.imwrite(str(root / "processed_lsd_jpgs" / "0001.jpg"), u8)
    with open(root / "coords_pretrain.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "source", "x", "y", "level", "relative_x", "relative_y"])
        for name, src in (("1_t2.jpg", "spider"), ("0001.jpg", "lsd")):
            for lv, (x, y) in ph.points.items():
                w.writerow([name, src, round(x), round(y), lv, x / 256, y / 256])
    scan = adapters.scan_kaggle(root)
    by_src = {it.source: it for it in scan.items}
    assert by_src["lsd"].image_path.suffix == ".jpg"
    assert by_src["spider"].subject_id == "spider-1" and by_src["lsd"].subject_id == "lsd-0001"
    image, mask, info = prep.process_item(by_src["spider"], "vertebral_body")
    np.testing.assert_array_equal(image, u8)  # the middle slice of the volume
    assert info["mask_kind"] == "roi" and info["n_points"] == 5
    truth = ph.mask.astype(bool)
    assert 2 * (truth & (mask > 0)).sum() / (truth.sum() + (mask > 0).sum()) > 0.6


def test_kaggle_errors(tmp_path):
    with pytest.raises(CliError, match="source folder not found"):
        adapters.scan_kaggle(tmp_path / "missing")
    tmp_path.joinpath("k").mkdir()
    with pytest.raises(CliError, match="no coords_pretrain.csv"):
        adapters.scan_kaggle(tmp_path / "k")
    (tmp_path / "k" / "coords_pretrain.csv").write_text("image,label\n")
    with pytest.raises(CliError, match="wrong columns: missing filename, source, x, y, level"):
        adapters.scan_kaggle(tmp_path / "k")
    (tmp_path / "k" / "coords_pretrain.csv").write_text("filename,source,x,y,level\n")
    with pytest.raises(CliError, match="no images"):
        adapters.scan_kaggle(tmp_path / "k")


# ---------------------------------------------------------------------------------- lumbar_mri


def test_lumbar_mri_reports_unlisted_and_missing(tmp_path):
    src = write_synthetic_source(tmp_path / "src", n_subjects=2, slices_per_subject=2, seed=1)
    np.save(src / "processed_synth_t1" / "99_s1.npy", np.ones((8, 8), np.uint8))
    gone = sorted((src / "processed_synth_t2").glob("*.npy"))[0]
    gone.unlink()
    (src / "processed_synth_t2_jpgs" / f"{gone.stem}.jpg").unlink()
    scan = adapters.scan_lumbar_mri(src)
    reasons = dict(scan.skipped)
    assert reasons["processed_synth_t1/99_s1.npy"] == "image not listed in slices.csv"
    assert reasons[f"synth_t2/{gone.stem}.jpg"] == "listed in slices.csv but no image file"
    assert len(scan.items) == 3
    assert all(it.mask_path is not None and it.structure == "vertebral_body" for it in scan.items)
    # The .jpg twin is used when the .npy is missing.
    jpg_only = sorted((src / "processed_synth_t1").glob("0*.npy"))[0]
    jpg_only.unlink()
    item = next(it for it in adapters.scan_lumbar_mri(src).items if it.source_path.endswith(".jpg"))
    assert item.source_path == f"processed_synth_t1_jpgs/{jpg_only.stem}.jpg"


def test_lumbar_mri_bad_structure(tmp_path):
    src = write_synthetic_source(tmp_path / "src", n_subjects=1, slices_per_subject=1, seed=1)
    text = (src / "slices.csv").read_text().replace("vertebral_body", "muscle")
    (src / "slices.csv").write_text(text)
    with pytest.raises(CliError, match="unknown structure 'muscle'"):
        adapters.scan_lumbar_mri(src)


# -------------------------------------------------------------------------------- plain folder


@pytest.fixture()
def mixed_folder(tmp_path) -> Path:
    """Per-subject folders of real DICOM (several transfer syntaxes), NIfTI, npy, PNG, JPEG."""
    root = tmp_path / "clinic"
    for sub in ("p01", "p02", "p03", "p04"):
        (root / sub).mkdir(parents=True)
    shutil.copy(dicom_file("MR_small.dcm"), root / "p01" / "MR_small.dcm")
    shutil.copy(dicom_file("MR_small_RLE.dcm"), root / "p01" / "IM0002")  # no suffix
    shutil.copy(dicom_file("emri_small_jpeg_2k_lossless.dcm"), root / "p02" / "j2k.dcm")
    shutil.copy(dicom_file("emri_small_jpeg_ls_lossless.dcm"), root / "p02" / "jls.dcm")
    import nibabel.testing

    shutil.copy(Path(nibabel.testing.data_path) / "anatomical.nii", root / "p03" / "anat.nii")
    for i in range(2):
        u8 = np.rint(make_phantom(i).image * 255).astype(np.uint8)
        cv2.imwrite(str(root / "p04" / f"slice{i}.png"), u8)
        cv2.imwrite(str(root / "p04" / f"slice{i}.jpg"), u8)
        np.save(root / "p04" / f"slice{i}.npy", u8.astype(np.float32) * 10)
    (root / "p04" / "notes.txt").write_text("not an image")
    (root / "p04" / "fake.png").write_bytes(b"this is text, not a PNG")
    return root


def test_folder_adapter_ingests_real_dicom_and_nifti(mixed_folder, tmp_path):
    res = prep.prepare_dataset("folder", mixed_folder, tmp_path / "ds", test_fraction=0.25)
    rows = read_rows(tmp_path / "ds")[0]
    paths = {r["source_path"] for r in rows}
    assert {"p01/MR_small.dcm", "p01/IM0002", "p02/j2k.dcm", "p02/jls.dcm", "p03/anat.nii"} <= paths
    assert len(rows) == 11
    assert {r["subject_id"] for r in rows} == {f"clinic-p0{i}" for i in range(1, 5)}
    assert {r["mask_kind"] for r in rows} == {"none"} and {r["source"] for r in rows} == {"clinic"}
    reasons = dict(res.skipped)
    assert reasons["p04/notes.txt"].startswith("not an image file")
    assert reasons["p04/fake.png"].startswith("unsupported_format")
    train = {r["subject_id"] for r in rows if r["split"] == "train"}
    assert len(train) == 3 and not train & {r["subject_id"] for r in rows if r["split"] == "test"}


def test_folder_with_labels_csv_is_clinical(mixed_folder, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "filename,AS_status,stage,subject_id\n"
        "p01/MR_small.dcm,1,Moderate,A\nIM0002,positive,2,A\nj2k.dcm,0,0,B\njls,0,Normal,B\n"
        "anat.nii,1,3,C\nslice0.png,0,0,D\nslice1.png,1,1,E\nmissing.dcm,1,1,F\n"
    )
    res = prep.prepare_dataset(
        "folder", mixed_folder, tmp_path / "ds", labels_csv=labels, test_fraction=0.4
    )
    rows = read_rows(tmp_path / "ds")[0]
    got = {r["source_path"]: (r["AS_status"], r["stage"], r["subject_id"]) for r in rows}
    assert got["p01/MR_small.dcm"] == ("1", "2", "A") and got["p02/jls.dcm"] == ("0", "0", "B")
    assert got["p03/anat.nii"] == ("1", "3", "C")
    assert {r["label_source"] for r in rows} == {"clinical"}
    assert res.label_source == "clinical" and "AS+ clinical" in res.summary
    assert (
        "1 rows of labels.csv match no image" in (tmp_path / "ds" / "dataset_info.txt").read_text()
    )
    assert any("no row in labels CSV" in r for _, r in res.skipped)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,label\na.png,1\n", "wrong columns: missing filename, AS_status, stage"),
        ("filename,AS_status,stage\na.png,maybe,0\n", "line 2: AS_status 'maybe'"),
        ("filename,AS_status,stage\na.png,1,7\n", "line 2: stage '7'"),
        ("filename,AS_status,stage\na.png,0,3\n", "must have stage Normal"),
        ("filename,AS_status,stage\n", "has no rows"),
    ],
)
def test_labels_csv_errors(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(CliError, match=message):
        adapters.read_labels_csv(path)
    with pytest.raises(CliError, match="labels CSV not found"):
        adapters.read_labels_csv(tmp_path / "none.csv")


def test_folder_masks_nifti_and_ct(tmp_path):
    root = tmp_path / "f"
    (root / "masks").mkdir(parents=True)
    ph = make_phantom(3)
    cv2.imwrite(str(root / "a_t2.png"), np.rint(ph.image * 255).astype(np.uint8))
    cv2.imwrite(str(root / "masks" / "a_t2.png"), ph.vertebra_labels)
    shutil.copy(dicom_file("CT_small.dcm"), root / "ct.dcm")
    if NIFTI.is_file():
        shutil.copy(NIFTI, root / "cervical.nii.gz")
    scan = adapters.scan_folder(root)
    assert [it.subject_id for it in scan.items if it.source_path == "a_t2.png"] == ["f-a"]
    item = next(it for it in scan.items if it.source_path == "a_t2.png")
    image, mask, info = prep.process_item(item, "vertebral_body")
    assert info["mask_kind"] == "expert" and np.array_equal(mask > 0, ph.mask > 0)
    ct = next(it for it in scan.items if it.source_path == "ct.dcm")
    with pytest.raises(prep._Skip, match="CT"):
        prep.process_item(ct, "vertebral_body")
    assert prep.process_item(ct, "vertebral_body", include_ct=True)[2]["mask_kind"] == "none"
    if NIFTI.is_file():
        nii = next(it for it in scan.items if it.source_path == "cervical.nii.gz")
        image, _, info = prep.process_item(nii, "vertebral_body")
        assert image.shape == (256, 256) and image.std() > 10 and info["bbox"] == (0, 0, 256, 256)
