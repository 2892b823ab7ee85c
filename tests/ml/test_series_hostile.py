"""Malformed series: a file whose header cannot be read is skipped and listed, broken geometry
is refused with ``inconsistent_geometry`` and voxels that are not numbers with
``unsupported_format``, never an unexpected exception."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ml.data.synthetic_series import dicom_series, enhanced_mr, phantom_series
from ml.series import SeriesError, load_nifti, scan_dicom

N = 4
SIZE = 32
# Rows (0028,0010), explicit VR little endian: US, 2 bytes, the value 32.
ROWS = b"\x28\x00\x10\x00US\x02\x00" + struct.pack("<H", SIZE)


@pytest.fixture(scope="module")
def phantom() -> Any:
    return phantom_series(N, SIZE, seed=3)


def _resave(data: bytes, mutate: Callable[[Any], None]) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    mutate(ds)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


BAD_ROWS = {
    "odd_length": b"\x28\x00\x10\x00US\x03\x00" + struct.pack("<H", SIZE) + b"\x00",
    "unknown_vr": b"\x28\x00\x10\x00XX\x02\x00" + struct.pack("<H", SIZE),
    "infinite": b"\x28\x00\x10\x00FD\x08\x00" + struct.pack("<d", float("inf")),
}


@pytest.mark.parametrize("compressed", [False, True], ids=["native", "rle"])
@pytest.mark.parametrize("rows", list(BAD_ROWS.values()), ids=list(BAD_ROWS))
def test_a_file_with_a_malformed_header_is_skipped(
    phantom: Any, rows: bytes, compressed: bool
) -> None:
    files = dicom_series(phantom, seed=1, compressed=compressed)
    name, data = files[-1]
    assert data.count(ROWS) == 1
    files[-1] = (name, data.replace(ROWS, rows))
    series = scan_dicom(files, min_slices=N - 1)
    assert series.skipped == [
        {"name": name, "code": "corrupt_image", "reason": "not readable DICOM"}
    ]
    assert len(series.slices) == N - 1 and series.rows == SIZE


def _empty_per_frame(ds: Any) -> None:
    from pydicom.sequence import Sequence

    ds.PerFrameFunctionalGroupsSequence = Sequence([])


def _empty_position(ds: Any) -> None:
    from pydicom.sequence import Sequence

    ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence = Sequence([])


def _empty_orientation(ds: Any) -> None:
    from pydicom.sequence import Sequence

    ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence = Sequence([])


def _fewer_frames(ds: Any) -> None:
    ds.NumberOfFrames = N - 1


MULTIFRAME = {
    "empty_per_frame": _empty_per_frame,
    "empty_plane_position": _empty_position,
    "empty_plane_orientation": _empty_orientation,
    "frames_and_items_differ": _fewer_frames,
}


@pytest.mark.parametrize("mutate", list(MULTIFRAME.values()), ids=list(MULTIFRAME))
def test_broken_multiframe_geometry_is_refused(phantom: Any, mutate: Any) -> None:
    data = _resave(enhanced_mr(phantom, seed=2), mutate)
    with pytest.raises(SeriesError) as info:
        scan_dicom([("mf.dcm", data)])
    assert info.value.code == "inconsistent_geometry", info.value.message


def test_an_empty_shared_group_without_spacing_is_no_spacing(phantom: Any) -> None:
    from pydicom.sequence import Sequence

    def mutate(ds: Any) -> None:
        del ds.PixelSpacing
        ds.SharedFunctionalGroupsSequence = Sequence([])

    files = [(name, _resave(data, mutate)) for name, data in dicom_series(phantom, seed=4)]
    series = scan_dicom(files)
    assert series.pixel_spacing == (1.0, 1.0) and len(series.slices) == N


def _nifti(arr: np.ndarray) -> bytes:
    import nibabel as nib

    return bytes(nib.Nifti1Image(arr, np.eye(4)).to_bytes())


@pytest.mark.parametrize(
    "arr",
    [
        np.zeros((N, 16, 16), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]),
        np.ones((N, 16, 16), dtype=np.complex64),
    ],
    ids=["rgb24", "complex64"],
)
def test_nifti_voxels_that_are_not_numbers_are_refused(arr: np.ndarray) -> None:
    with pytest.raises(SeriesError) as info:
        load_nifti(_nifti(arr))
    assert info.value.code == "unsupported_format", info.value.message


def test_a_grey_nifti_still_loads() -> None:
    series = load_nifti(_nifti(np.arange(N * 16 * 16, dtype=np.uint8).reshape(N, 16, 16)))
    assert series.volume is not None and series.volume.dtype == np.float32


def test_a_compressed_frame_larger_than_its_header_is_not_decoded(
    phantom: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2
    import pydicom.pixels
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from ml.io import ImageError
    from ml.series import dicom_slice

    def to_big_jpeg(ds: Any) -> None:
        # The header still says SIZE x SIZE; the codestream holds 8x as many rows and columns.
        big = np.full((8 * SIZE, 8 * SIZE), 128, np.uint8)
        ds.PixelData = encapsulate([cv2.imencode(".jpg", big)[1].tobytes()])
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7

    files = dicom_series(phantom, seed=1)
    files[-1] = (files[-1][0], _resave(files[-1][1], to_big_jpeg))
    series = scan_dicom(files, min_slices=N)
    ref = next(r for r in series.slices if r.source == len(files) - 1)
    decoded: list[Any] = []
    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: decoded.append(a))
    with pytest.raises(ImageError, match="compressed frame is 256x256") as caught:
        dicom_slice(files, ref)
    assert caught.value.code == "corrupt_image" and decoded == []


@pytest.mark.parametrize("slope", [["1", "2"], "nan"], ids=["two-values", "not-finite"])
def test_a_slice_with_a_bad_rescale_slope_is_its_own_corrupt_image(
    phantom: Any, slope: Any
) -> None:
    from ml.io import ImageError
    from ml.series import dicom_slice

    def bad_slope(ds: Any) -> None:
        ds.RescaleSlope = slope

    files = dicom_series(phantom, seed=1)
    files[-1] = (files[-1][0], _resave(files[-1][1], bad_slope))
    series = scan_dicom(files, min_slices=N)
    ref = next(r for r in series.slices if r.source == len(files) - 1)
    with pytest.raises(ImageError, match="RescaleSlope") as caught:
        dicom_slice(files, ref)
    assert caught.value.code == "corrupt_image"
