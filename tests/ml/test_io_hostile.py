"""Every decoder refuses bombs and malformed files with its code, allocating almost nothing."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest

from ml.io import (
    ImageError,
    inflate,
    nifti_declared_bytes,
    nifti_mid_sagittal,
    read_image,
)
from tests.hostile import corpus, nifti_gzip_stream_bomb

LIMITS = {"max_pixels": 40_000_000, "max_frames": 2_000, "max_decoded_bytes": 64 * 1024**2}
CORPUS = corpus(max_decoded_mib=64)


@pytest.mark.parametrize("item", CORPUS, ids=[h.name for h in CORPUS])
def test_hostile_input_is_refused_with_bounded_memory(item):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(ImageError) as info:
            read_image(item.data, **LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == item.code, info.value.message
    # The largest of these declares gigabytes; refusing one may hold a few MiB at most.
    assert peak < 80 * 1024**2, f"{item.name}: peak {peak / 2**20:.0f} MiB"


def test_inflate_stops_at_the_limit():
    bomb = nifti_gzip_stream_bomb(100)
    assert len(bomb) < 1024**2
    with pytest.raises(ImageError) as info:
        inflate(bomb, 8 * 1024**2)
    assert info.value.code == "too_large"
    assert len(inflate(bomb, 8 * 1024**2, head=352)) == 352


# ----------------------------------------------------------------------------- malformed DICOM


def mr_dicom(
    mutate: Callable[[Any], None] | None = None,
    *,
    rows: int = 8,
    cols: int = 8,
    pixel_data: bytes | None = None,
    syntax: str | None = None,
) -> bytes:
    """A small, valid MR DICOM (explicit VR little endian unless ``syntax``): 16-bit gradient,
    or 8-bit encapsulated ``pixel_data`` when a compressed ``syntax`` is given."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = 16 if syntax is None else 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if syntax is None:
        ds.PixelData = np.arange(rows * cols, dtype=np.uint16).tobytes()
    else:
        ds.PixelData = encapsulate([pixel_data or b""])
        ds["PixelData"].VR = "OB"
    if mutate is not None:
        mutate(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


ROWS_US = b"\x28\x00\x10\x00US\x02\x00\x08\x00"  # (0028,0010) Rows = 8, explicit VR LE


def _nested_sequences(data: bytes, depth: int = 5_000) -> bytes:
    """``depth`` undefined-length sequences, each in an item of the one before, before PixelData."""
    at = data.find(b"\xe0\x7f\x10\x00")
    opened = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closed = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return data[:at] + opened * depth + closed * depth + data[at:]


def _j2k_header(rows: int, cols: int) -> bytes:
    """A JPEG 2000 codestream's SOC and SIZ segments (one 8-bit component), then EOC."""
    siz = struct.pack(">HHIIIIIIIIH", 41, 0, cols, rows, 0, 0, cols, rows, 0, 0, 1)
    return b"\xff\x4f\xff\x51" + siz + b"\x07\x01\x01" + b"\xff\xd9"


def malformed_dicoms() -> dict[str, bytes]:
    """DICOM files whose header pydicom chokes on, each answered ``corrupt_image``."""
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless

    good = mr_dicom()
    assert ROWS_US in good
    modality = b"\x08\x00\x60\x00CS\x02\x00MR"
    slope = b"\x28\x00\x53\x10DS\x04\x0012.5"
    big_jpeg = cv2.imencode(".jpg", np.full((64, 64), 128, np.uint8))[1].tobytes()
    # JPEG-LS: SOI and a SOF55 declaring 4096 x 4096, nothing else.
    big_jls = b"\xff\xd8\xff\xf7" + struct.pack(">HBHHB", 11, 8, 4096, 4096, 1) + b"\x01\x11\x00"
    return {
        "rows-odd-length": good.replace(ROWS_US, b"\x28\x00\x10\x00US\x03\x00\x08\x00\x00"),
        "rows-inf": good.replace(
            ROWS_US, b"\x28\x00\x10\x00FD\x08\x00" + struct.pack("<d", np.inf)
        ),
        "rows-1e300": good.replace(
            ROWS_US, b"\x28\x00\x10\x00FD\x08\x00" + struct.pack("<d", 1e300)
        ),
        "rows-unknown-vr": good.replace(ROWS_US, b"\x28\x00\x10\x00XX\x02\x00\x08\x00"),
        "modality-unknown-vr": good.replace(modality, b"\x08\x00\x60\x00XX\x02\x00MR"),
        "nested-sequences": _nested_sequences(good),
        "slope-text": mr_dicom(lambda ds: setattr(ds, "RescaleSlope", "12.5")).replace(
            slope, b"\x28\x00\x53\x10DS\x04\x00abc "
        ),
        "slope-two-values": mr_dicom(lambda ds: setattr(ds, "RescaleSlope", [1, 2])),
        "jpeg-larger-than-header": mr_dicom(pixel_data=big_jpeg, syntax=JPEGBaseline8Bit),
        "jpeg-ls-larger-than-header": mr_dicom(pixel_data=big_jls, syntax=JPEGLSLossless),
        "j2k-larger-than-header": mr_dicom(
            pixel_data=_j2k_header(30_000, 30_000), syntax=JPEG2000Lossless
        ),
    }


MALFORMED = malformed_dicoms()


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_dicom_header_is_corrupt_image(name, monkeypatch):
    decoded: list[Any] = []
    monkeypatch.setattr("pydicom.pixels.pixel_array", lambda *a, **k: decoded.append(a))
    with pytest.raises(ImageError) as info:
        read_image(MALFORMED[name], **LIMITS)
    assert info.value.code == "corrupt_image", info.value.message
    message = info.value.message
    assert message.startswith("The DICOM ") and message.endswith(".") and len(message) < 160
    assert "Error" not in message and "could not convert" not in message
    # Refused from the header: no frame was handed to a decoder.
    assert decoded == []


def test_compressed_frame_matching_its_header_still_decodes():
    from pydicom.uid import JPEGBaseline8Bit

    gradient = np.tile(np.arange(0, 256, 32, dtype=np.uint8), (8, 1))
    jpeg = cv2.imencode(".jpg", gradient, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    loaded = read_image(mr_dicom(pixel_data=jpeg, syntax=JPEGBaseline8Bit), **LIMITS)
    assert loaded.pixels.shape == (8, 8)
    assert np.abs(loaded.pixels - gradient).max() <= 8


def test_absurd_declared_sizes_give_short_messages():
    from numpy.lib import format as npy_format

    for shape in [(2**62,) * 6, (2**62,) * 20]:  # the second overflows a float64 product
        buf = io.BytesIO()
        npy_format.write_array_header_2_0(
            buf, {"descr": "<f8", "fortran_order": False, "shape": shape}
        )
        with pytest.raises(ImageError) as info:
            read_image(buf.getvalue(), **LIMITS)
        assert info.value.code == "too_large" and len(info.value.message) < 120
    huge = mr_dicom(lambda ds: (setattr(ds, "Rows", 65_535), setattr(ds, "Columns", 65_535)))
    with pytest.raises(ImageError) as info:
        read_image(huge, **LIMITS)
    assert info.value.code == "too_large" and "4,294,836,225 pixels" in info.value.message


# ----------------------------------------------------------------------------- frames


@pytest.mark.parametrize(
    "data",
    [
        cv2.imencode(".png", np.eye(8, dtype=np.uint8) * 200)[1].tobytes(),
        cv2.imencode(".jpg", np.eye(8, dtype=np.uint8) * 200)[1].tobytes(),
        mr_dicom(),
        None,  # a 2D .npy, built below
        None,  # a 2D NIfTI, built below
    ],
    ids=["png", "jpeg", "dicom", "npy", "nifti"],
)
def test_frame_of_a_single_frame_input_is_bad_frame(data, request):
    import nibabel as nib

    kind = request.node.callspec.id
    if kind == "npy":
        buf = io.BytesIO()
        np.save(buf, np.eye(8) * 3)
        data = buf.getvalue()
    elif kind == "nifti":
        data = nib.Nifti1Image(np.eye(8, dtype=np.int16) * 3, np.eye(4)).to_bytes()
    assert read_image(data, frame=0).pixels.shape[:2] == (8, 8)
    with pytest.raises(ImageError) as info:
        read_image(data, frame=7)
    assert info.value.code == "bad_frame" and "Frame 7" in info.value.message


# ----------------------------------------------------------------------------- NIfTI scaling


def _nifti(shape: tuple[int, ...], slope: float, inter: float = 0.0, affine=None) -> bytes:
    import nibabel as nib

    data = (np.arange(np.prod(shape)) % 251).astype(np.uint8).reshape(shape)
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    img.header.set_slope_inter(slope, inter)
    return img.to_bytes()


def test_scaled_nifti_counts_float64_voxels():
    header = _nifti((10, 10, 10), 1.0)[:352]
    assert nifti_declared_bytes(header) == 1000
    assert nifti_declared_bytes(_nifti((10, 10, 10), 2.0)[:352]) == 8000
    assert nifti_declared_bytes(_nifti((10, 10, 10), 1.0, 5.0)[:352]) == 8000
    # uint8 8 MiB on disk, but nibabel scales it to 64 MiB of float64.
    with pytest.raises(ImageError) as info:
        read_image(gzip.compress(_nifti((8, 1024, 1024), 2.0), 1), max_decoded_bytes=32 * 1024**2)
    assert info.value.code == "too_large"


def test_nifti_volume_reads_only_its_slice():
    data = _nifti((32, 512, 512), 2.0)  # 8 MiB of uint8; 64 MiB once scaled as a whole
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        loaded = read_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded.pixels.shape == (512, 512) and loaded.pixels.dtype == np.float64
    assert peak < 40 * 1024**2, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("frame", [None, 0, 5])
def test_nifti_slice_read_matches_the_whole_volume(frame):
    import nibabel as nib

    # Stored axes (S, L, P): the sagittal axis is the second, flipped.
    affine = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    data = _nifti((12, 9, 14), 3.0, 1.0, affine)
    img = nib.Nifti1Image.from_bytes(data)
    expected = nifti_mid_sagittal(np.asanyarray(img.dataobj), affine, frame)
    loaded = read_image(data, frame=frame)
    np.testing.assert_array_equal(loaded.pixels, expected)
    assert loaded.meta["sagittal_index"] == (9 // 2 if frame is None else frame)


def test_nifti_without_orientation_is_corrupt_image():
    import nibabel as nib

    raw = _nifti((4, 5, 6), 1.0)
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    header["sform_code"], header["qform_code"] = 1, 0
    for row in ("srow_x", "srow_y", "srow_z"):
        header[row] = 0  # an all-zero affine: no axis runs left-right
    with pytest.raises(ImageError) as info:
        read_image(header.binaryblock + raw[348:])
    assert info.value.code == "corrupt_image"
