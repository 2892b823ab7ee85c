"""A corpus of hostile and malformed inputs, one per class, each small on the wire.

Shared by the decoder tests, the API tests and the flood test. Every entry says the error code
and HTTP status the service must answer with; none may make it allocate what it declares.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    code: str
    status: int


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header declares 10 giga-pixels, with a few hundred bytes of zlib data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bomb(width: int = 65_000, height: int = 65_000) -> bytes:
    """A baseline JPEG header (SOF0) declaring 65000 x 65000 grey pixels, no real scan data."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def nifti_header(shape: tuple[int, ...], datatype: int = 16, bitpix: int = 32) -> bytes:
    """A minimal NIfTI-1 single-file header (348 bytes + 4 bytes of extension flag)."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    dims = [len(shape), *shape] + [1] * (7 - len(shape))
    struct.pack_into("<8h", hdr, 40, *dims)
    struct.pack_into("<hh", hdr, 70, datatype, bitpix)
    struct.pack_into("<8f", hdr, 76, 1.0, *([1.0] * 7))
    struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
    struct.pack_into("<h", hdr, 254, 1)  # sform code
    struct.pack_into("<4f", hdr, 280, 1, 0, 0, 0)
    struct.pack_into("<4f", hdr, 296, 0, 1, 0, 0)
    struct.pack_into("<4f", hdr, 312, 0, 0, 1, 0)
    hdr[344:348] = b"n+1\x00"
    return bytes(hdr) + b"\x00\x00\x00\x00"


def nifti_gzip_declared_bomb() -> bytes:
    """A .nii.gz whose header declares 1000^3 float32 voxels (4 GB), with no voxels at all."""
    return gzip.compress(nifti_header((1000, 1000, 1000)))


def nifti_gzip_stream_bomb(inflated_mib: int = 200) -> bytes:
    """A .nii.gz that declares 64^3 voxels but inflates to ``inflated_mib`` MiB of zeros."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        gz.write(nifti_header((64, 64, 64)))
        zeros = b"\x00" * (1 << 20)
        for _ in range(inflated_mib):
            gz.write(zeros)
    return out.getvalue()


def dicom_bomb(rle: bool = True, frames: int = 1000, rows: int = 4096, cols: int = 4096) -> bytes:
    """An MR DICOM declaring ``frames`` x ``rows`` x ``cols`` 16-bit pixels with almost no data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, RLELossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = RLELossless if rle else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if rle:
        from pydicom.encaps import encapsulate

        # One tiny RLE segment per frame, each claiming the whole frame.
        segment = struct.pack("<16I", 1, 64, *([0] * 14)) + b"\x81\x00" * 8
        ds.PixelData = encapsulate([segment] * frames)
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = b"\x00\x00" * 16
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def npy_bomb() -> bytes:
    """A .npy header declaring 10^12 float64 values, followed by 64 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (1_000_000, 1_000_000)}
    )
    return b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\x00" * 64


def corpus(max_decoded_mib: int = 512) -> list[Hostile]:
    """One hostile or malformed file per class, with the answer the service must give."""
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
    return [
        Hostile("png-bomb", png_bomb(), "too_large", 413),
        Hostile("jpeg-bomb", jpeg_bomb(), "too_large", 413),
        Hostile("nifti-declared-bomb", nifti_gzip_declared_bomb(), "too_large", 413),
        Hostile("nifti-stream-bomb", nifti_gzip_stream_bomb(max_decoded_mib + 8), "too_large", 413),
        Hostile("dicom-rle-bomb", dicom_bomb(rle=True), "too_large", 413),
        Hostile("dicom-raw-bomb", dicom_bomb(rle=False), "too_large", 413),
        Hostile("npy-bomb", npy_bomb(), "too_large", 413),
        Hostile("png-truncated", png, "corrupt_image", 400),
        Hostile("gzip-truncated", nifti_gzip_declared_bomb()[:40], "corrupt_image", 400),
        Hostile(
            "dicom-no-pixels", dicom_bomb(rle=False, frames=1, rows=8)[:200], "empty_image", 400
        ),
        Hostile(
            "dicom-truncated", dicom_bomb(rle=False, frames=1, rows=8)[:-20], "corrupt_image", 400
        ),
        Hostile("text", b"patient,AS\n1,0\n" * 10, "unsupported_format", 415),
        Hostile("empty", b"", "empty_image", 400),
    ]
