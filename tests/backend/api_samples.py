"""Real image files (good and bad) for the API tests, built in memory."""

from __future__ import annotations

import gzip
import io

import numpy as np


def png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def phantom(seed: int = 0, size: int = 256) -> np.ndarray:
    """A synthetic sagittal spine slice (uint8), or a textured stand-in if phantoms are absent."""
    try:
        from ml.data.synthetic import make_phantom

        img = make_phantom(seed, size).image
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    except ImportError:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:size, 0:size]
        img = 100 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 10, (size, size))
        return np.clip(img, 0, 255).astype(np.uint8)


def phantom_png(seed: int = 0) -> bytes:
    return png(phantom(seed))


def dicom(arr: np.ndarray | None = None, frames: int = 1) -> bytes:
    """A minimal MR DICOM (16-bit, MONOCHROME2), multi-frame when frames > 1."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    base = (phantom(3).astype(np.uint16) * 16) if arr is None else arr.astype(np.uint16)
    data = np.stack([base + i for i in range(frames)]) if frames > 1 else base
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = base.shape
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = data.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def nifti_gz() -> bytes:
    import nibabel as nib

    vol = np.stack([phantom(i, 64).astype(np.int16) for i in range(5)])
    img = nib.Nifti1Image(vol, np.eye(4))
    return gzip.compress(img.to_bytes())


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


# ---------------------------------------------------------------- bad files, one per error code


def not_an_image() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"


def truncated_png() -> bytes:
    return phantom_png(1)[:300]


def blank_png() -> bytes:
    return png(np.full((128, 128), 77, np.uint8))


def huge_png(side: int = 1600) -> bytes:
    # Compresses to a few kB but decodes to side*side pixels: over the test pixel limit.
    return png(np.tile(np.arange(side, dtype=np.uint8), (side, 1)))


def bomb_png(side: int = 20_000) -> bytes:
    """A 57-byte PNG whose header claims side x side pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def volume_npy(depth: int = 3) -> bytes:
    rng = np.random.default_rng(0)
    return npy(rng.random((depth, 32, 32)).astype(np.float32))
