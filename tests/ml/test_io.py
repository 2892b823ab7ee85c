"""ml.io.read_image: formats by content, real DICOM/NIfTI, and the right code for bad input."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from ml.io import ImageError, nifti_mid_sagittal, read_image, require_content, sniff_format
from tests.conftest import SHARED_DATA

NIFTI = SHARED_DATA / "nifti" / "sct_t2_cervical.nii.gz"


def dicom_file(name: str) -> Path:
    """A pydicom / pydicom-data test file that is on disk (never downloaded)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None or not Path(path).is_file():
        pytest.skip(f"{name} is not shipped locally by pydicom or pydicom-data")
    return Path(path)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    return cv2.imencode(".png", arr)[1].tobytes()


GRAD = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))


def code_of(data, **kw) -> str:
    with pytest.raises(ImageError) as info:
        read_image(data, **kw)
    assert info.value.message and str(info.value) == info.value.message
    return info.value.code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_image"),
        (b"patient,AS_status\n1,0\n" * 20, "unsupported_format"),
        (np.random.default_rng(0).bytes(4096), "unsupported_format"),
        (png_bytes(GRAD)[:60], "corrupt_image"),
        (png_bytes(GRAD)[: len(png_bytes(GRAD)) // 2], "corrupt_image"),
        (cv2.imencode(".jpg", GRAD)[1].tobytes()[:300], "corrupt_image"),
        (npy_bytes(GRAD)[:-40], "corrupt_image"),
        (npy_bytes(np.zeros((2, 3, 4, 5))), "unsupported_format"),
        (npy_bytes(np.zeros((4, 4), complex)), "unsupported_format"),
        (gzip.compress(b"not a nifti" * 100), "unsupported_format"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt_image"),
    ],
    ids=[
        "empty", "text", "random", "png-header", "png-truncated", "jpeg-truncated",
        "npy-truncated", "npy-4d", "npy-complex", "gzip-not-nifti", "gzip-broken",
    ],
)  # fmt: skip
def test_bad_inputs_get_the_right_code(data, code):
    assert code_of(data) == code


def test_bad_files_on_disk(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    assert code_of(tmp_path / "empty.png") == "empty_image"
    assert code_of(str(tmp_path / "notes.txt")) == "unsupported_format"
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def test_truncated_dicom_and_nifti():
    data = dicom_file("MR_small.dcm").read_bytes()
    assert code_of(data[: len(data) // 2]) == "corrupt_image"
    assert code_of(data[:200]) == "empty_image"  # the header survives, the pixel data is gone
    if NIFTI.is_file():
        raw = NIFTI.read_bytes()
        assert code_of(raw[: len(raw) // 2]) == "corrupt_image"


def test_limits_and_frames():
    assert code_of(png_bytes(GRAD), max_pixels=100) == "too_large"
    vol = npy_bytes(np.stack([GRAD, GRAD + 1, GRAD + 2]))
    assert read_image(vol).meta["slice_index"] == 1
    np.testing.assert_array_equal(read_image(vol, frame=2).pixels, GRAD + 2)
    assert code_of(vol, frame=3) == "bad_frame"
    emri = dicom_file("emri_small.dcm")
    assert read_image(emri).meta["frame"] == 5
    assert code_of(emri, frame=10) == "bad_frame"
    assert code_of(emri, max_frames=4) == "too_large"


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20_000, 10_000], ids=["bomb-error", "bomb-warning"])
def test_decompression_bomb_is_too_large(side):
    # 20000^2 trips Pillow's DecompressionBombError, 10000^2 only its warning: both are refused
    # before decoding, even when the caller sets no pixel limit of its own.
    assert code_of(_png_header_only(side, side)) == "too_large"
    assert code_of(_png_header_only(side, side), max_pixels=10**12) == "too_large"


def test_formats_are_recognised_by_content_not_name(tmp_path):
    path = tmp_path / "scan.jpg"
    path.write_bytes(png_bytes(GRAD))  # a PNG with the wrong suffix
    loaded = read_image(path)
    assert loaded.format == "png"
    np.testing.assert_array_equal(loaded.pixels, GRAD)
    assert sniff_format(npy_bytes(GRAD)) == "npy"
    rgb = np.dstack([GRAD, GRAD // 2, GRAD // 3])
    assert read_image(cv2.imencode(".png", rgb)[1].tobytes()).pixels.shape == (48, 64, 3)


@pytest.mark.parametrize(
    "name",
    [
        "emri_small_RLE.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
    ],
)
def test_compressed_dicom_decodes_like_uncompressed(name):
    reference = read_image(dicom_file("emri_small.dcm"))
    loaded = read_image(dicom_file(name))
    assert loaded.format == "dicom" and loaded.meta["modality"] == "MR"
    assert loaded.meta["transfer_syntax"] != reference.meta["transfer_syntax"]
    np.testing.assert_array_equal(loaded.pixels, reference.pixels)


def test_real_mr_dicom():
    small = read_image(dicom_file("MR_small.dcm"))
    assert small.pixels.shape == (64, 64) and small.meta["photometric"] == "MONOCHROME2"
    require_content(small.pixels)
    big = read_image(dicom_file("MR2_UNCI.dcm"))
    assert big.pixels.shape == (1024, 1024)


def test_ycbcr_dicom_comes_out_rgb():
    """JPEG DICOM stored as YBR_FULL: colours match the uncompressed RGB original."""
    import pydicom

    ref = pydicom.dcmread(dicom_file("SC_rgb.dcm")).pixel_array.astype(float)
    loaded = read_image(dicom_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert loaded.meta["photometric"].startswith("YBR")
    assert np.abs(loaded.pixels.astype(float) - ref).mean() < 3


def test_nifti_mid_sagittal_is_reoriented():
    """The same anatomy stored RAS or LPI gives the same superior-up, anterior-left slice."""
    vol = np.zeros((9, 20, 30), np.float32)  # R, A, S
    vol[4, 15, 25] = 1.0  # anterior and superior, on the midline
    ras = nifti_mid_sagittal(vol, np.eye(4))
    assert ras.shape == (30, 20)
    row, col = np.argwhere(ras == 1.0)[0]
    assert row < 15 and col < 10  # superior is up, anterior is left
    flipped = vol[::-1, ::-1, ::-1]  # stored L, P, I
    affine = np.diag([-1.0, -1.0, -1.0, 1.0])
    np.testing.assert_array_equal(nifti_mid_sagittal(flipped, affine), ras)


def test_real_nifti_files(tmp_path):
    import nibabel.testing

    anat = read_image(Path(nibabel.testing.data_path) / "anatomical.nii")
    assert anat.format == "nifti" and anat.pixels.ndim == 2 and "sagittal_index" in anat.meta
    four_d = read_image(Path(nibabel.testing.data_path) / "example4d.nii.gz")
    assert four_d.meta["volume_index"] == 0 and four_d.pixels.ndim == 2
    if not NIFTI.is_file():
        pytest.skip(f"shared NIfTI not found at {NIFTI}")
    loaded = read_image(NIFTI)
    assert loaded.pixels.shape == (55, 60) and loaded.meta["shape"] == [60, 55, 52]
    require_content(loaded.pixels)
    # Round trip through nibabel's own writer: a 2D NIfTI is passed through as it is.
    img2d = nib.Nifti1Image(GRAD.astype(np.int16), np.eye(4))
    nib.save(img2d, tmp_path / "flat.nii")
    np.testing.assert_array_equal(read_image(tmp_path / "flat.nii").pixels, GRAD)


def test_require_content():
    with pytest.raises(ImageError) as info:
        require_content(np.full((8, 8), 3.0))
    assert info.value.code == "empty_image"
    with pytest.raises(ImageError):
        require_content(np.full((4, 4), np.nan))
    require_content(GRAD)
