"""Read one image from bytes or a file, recognising the format by content, not by name.

Shared by the ingest adapters, the CLI and the API, so every entry point accepts the same inputs
and rejects bad ones with the same machine-readable codes.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMATS = ("png", "jpeg", "npy", "dicom", "nifti")
# Decoded pixel data (or inflated gzip) of one image: large enough for any real series slice
# stack, small enough that a crafted file cannot take the machine's memory.
DEFAULT_MAX_DECODED_BYTES = 512 * 1024**2
_CHUNK = 1 << 20


class ImageError(ValueError):
    """An input that cannot be turned into a slice; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class LoadedImage:
    """A decoded 2D slice and what we know about where it came from."""

    pixels: np.ndarray
    format: str
    meta: dict[str, Any] = field(default_factory=dict)


def _is_nifti_header(head: bytes) -> bool:
    if len(head) < 348:
        return False
    sizeof_hdr_le = int.from_bytes(head[:4], "little")
    sizeof_hdr_be = int.from_bytes(head[:4], "big")
    magic = head[344:348]
    sized = sizeof_hdr_le in (348, 540) or sizeof_hdr_be in (348, 540)
    nifti2 = sizeof_hdr_le == 540 and head[4:8] == b"n+2\x00"
    return (sized and magic[:3] in (b"n+1", b"ni1", b"n+2")) or nifti2


def inflate(data: bytes, limit: int, *, head: int | None = None) -> bytes:
    """Inflate a gzip stream chunk by chunk, refusing to produce more than ``limit`` bytes.

    Args:
        data: the gzip bytes.
        limit: the most output bytes allowed (``too_large`` beyond it).
        head: stop after this many output bytes (read a header without inflating the rest).

    Raises:
        ImageError: ``corrupt_image`` for a broken stream, ``too_large`` past ``limit``.
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    want = limit + 1 if head is None else min(head, limit + 1)
    try:
        pending = data
        while pending and len(out) < want:
            out += inflater.decompress(pending, min(_CHUNK, want - len(out)))
            pending = inflater.unconsumed_tail
        if head is None and len(out) <= limit and not inflater.eof:
            out += inflater.flush()
    except zlib.error as exc:
        raise ImageError("corrupt_image", "The gzip stream is truncated or corrupt.") from exc
    if len(out) > limit:
        raise ImageError(
            "too_large", f"The gzip stream inflates to more than {limit:,} bytes (the limit)."
        )
    short = head is not None and len(out) < head
    if (head is None or short) and not inflater.eof:
        raise ImageError("corrupt_image", "The gzip stream is truncated or corrupt.")
    return bytes(out[:head] if head is not None else out)


def sniff_format(data: bytes) -> str:
    """Return one of FORMATS from the leading bytes, or raise ``unsupported_format``."""
    if len(data) == 0:
        raise ImageError("empty_image", "The file is empty (0 bytes).")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x93NUMPY"):
        return "npy"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"\x1f\x8b"):
        head = inflate(data, DEFAULT_MAX_DECODED_BYTES, head=352)
        if _is_nifti_header(head):
            return "nifti"
        raise ImageError(
            "unsupported_format",
            "A gzip file that is not a NIfTI image (.nii.gz) is not supported.",
        )
    if _is_nifti_header(data[:352]):
        return "nifti"
    raise ImageError(
        "unsupported_format",
        "Unsupported file: expected PNG, JPEG, NumPy .npy, DICOM or NIfTI (recognised by content).",
    )


def _amount(n: int) -> str:
    """``n`` for a message: exact with separators, or a bound when a crafted header makes it
    absurd (a 300-digit number says nothing to the reader)."""
    return f"{n:,}" if n < 10**15 else "more than 10^15"


def _single_frame(frame: int | None, what: str) -> None:
    """Refuse a frame index other than 0 for an input that holds one frame only."""
    if frame not in (None, 0):
        raise ImageError("bad_frame", f"Frame {frame} does not exist: the {what} has one frame.")


def _check_pixels(shape: tuple[int, ...], max_pixels: int | None) -> None:
    n = math.prod(int(d) for d in (shape[:2] if len(shape) >= 2 else shape))
    if max_pixels is not None and n > max_pixels:
        raise ImageError(
            "too_large",
            f"The image has {_amount(n)} pixels per slice; the limit is {max_pixels:,}.",
        )


def _read_raster(data: bytes, fmt: str, max_pixels: int | None) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow refuses (error) or warns about headers that declare a decompression bomb;
        # the warning is escalated so a bomb is rejected before any pixel is decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            _check_pixels((img.height, img.width), max_pixels)
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            "too_large",
            f"The {fmt.upper()} header declares more pixels than the server will decode.",
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError("corrupt_image", f"The {fmt.upper()} file could not be decoded.") from exc
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode == "LA" or mode == "1":
        img = img.convert("L")
    arr = np.array(img)
    return LoadedImage(arr, fmt, {"mode": mode, "size": [img.width, img.height]})


def _check_npy_header(data: bytes, max_decoded_bytes: int) -> None:
    """Refuse a .npy whose header declares more data than the file holds or the limit allows
    (numpy would allocate the declared array before reading it)."""
    from numpy.lib import format as npy_format

    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        reader = (
            npy_format.read_array_header_1_0
            if version == (1, 0)
            else npy_format.read_array_header_2_0
        )
        shape, _, dtype = reader(stream)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise ImageError("corrupt_image", "The .npy header could not be read.") from exc
    # Python ints: a product of crafted dimensions must not overflow to inf.
    declared = math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
    if declared > max_decoded_bytes:
        raise ImageError(
            "too_large",
            f"The .npy array declares {_amount(declared)} bytes; the limit is "
            f"{max_decoded_bytes:,}.",
        )
    if declared > len(data) - stream.tell():
        raise ImageError("corrupt_image", "The .npy file is shorter than its header says.")


def _read_npy(
    data: bytes, frame: int | None, max_pixels: int | None, max_decoded_bytes: int
) -> LoadedImage:
    _check_npy_header(data, max_decoded_bytes)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ImageError(
            "corrupt_image", "The .npy file could not be read as a numeric array."
        ) from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise ImageError("unsupported_format", "The .npy array must be numeric (bool/int/float).")
    meta: dict[str, Any] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4)):
        _single_frame(frame, ".npy image")  # grey, colour or single-channel 2D
    elif arr.ndim == 3:
        # A volume (slices first, as the Kaggle SPIDER part): the middle slice unless named.
        idx = arr.shape[0] // 2 if frame is None else frame
        if not 0 <= idx < arr.shape[0]:
            raise ImageError(
                "bad_frame", f"Slice {idx} is outside the volume (0..{arr.shape[0] - 1})."
            )
        arr = arr[idx]
        meta["slice_index"] = idx
    else:
        raise ImageError("unsupported_format", f"Expected a 2D or 3D array, got {arr.ndim}D.")
    _check_pixels(arr.shape, max_pixels)
    return LoadedImage(arr, "npy", meta)


# No DICOM integer VR (US, UL, IS) holds more: a larger value is a malformed header, not an image.
_MAX_TAG_INT = 2**32 - 1


def _int_tag(ds: Any, name: str, default: int) -> int:
    try:
        value = ds.get(name, default)
        number = int(value if value not in (None, "") else default)
    except Exception as exc:  # noqa: BLE001 - a bad element raises many types (length, VR, inf)
        raise ImageError("corrupt_image", f"The DICOM {name} is not a valid number.") from exc
    if abs(number) > _MAX_TAG_INT:
        raise ImageError("corrupt_image", f"The DICOM {name} is out of range.")
    return number


def dicom_float(ds: Any, name: str, default: float) -> float:
    """A DICOM decimal such as RescaleSlope: one finite number, or ``corrupt_image``."""
    try:
        value = ds.get(name, default)
        number = float(value if value not in (None, "") else default)
    except Exception as exc:  # noqa: BLE001 - text, several values, a bad element
        raise ImageError("corrupt_image", f"The DICOM {name} is not a single number.") from exc
    if not math.isfinite(number):
        raise ImageError("corrupt_image", f"The DICOM {name} is not a finite number.")
    return number


def check_dicom_size(
    ds: Any, max_pixels: int | None, max_frames: int | None, max_decoded_bytes: int | None
) -> tuple[int, int, int]:
    """Rows, columns and frames of a DICOM dataset, refused (``too_large``) before any pixel is
    decoded when one frame, the frame count or all frames together exceed the limits."""
    rows, cols = _int_tag(ds, "Rows", 0), _int_tag(ds, "Columns", 0)
    _check_pixels((rows, cols), max_pixels)
    n_frames = max(1, _int_tag(ds, "NumberOfFrames", 1))
    if max_frames is not None and n_frames > max_frames:
        raise ImageError(
            "too_large", f"The DICOM has {n_frames:,} frames; the limit is {max_frames:,}."
        )
    samples = max(1, _int_tag(ds, "SamplesPerPixel", 1))
    bits = max(1, _int_tag(ds, "BitsAllocated", 16))
    decoded = n_frames * rows * cols * samples * ((bits + 7) // 8)
    if max_decoded_bytes is not None and decoded > max_decoded_bytes:
        raise ImageError(
            "too_large",
            f"The DICOM pixel data would decode to {_amount(decoded)} bytes; the limit is "
            f"{max_decoded_bytes:,}.",
        )
    return rows, cols, n_frames


def _check_codestream(ds: Any, index: int | None, n_frames: int, rows: int, cols: int) -> None:
    """Refuse a compressed frame whose own header gives another size than the DICOM's."""
    from ml.codestream import frame_mismatch

    problem = frame_mismatch(ds, index, n_frames, rows, cols, _int_tag(ds, "SamplesPerPixel", 1))
    if problem is not None:
        raise ImageError("corrupt_image", problem)


def _dicom_pixels(ds: Any, index: int | None) -> np.ndarray:
    """One frame (``index``) or the single frame, decoded without decoding the others."""
    from pydicom.pixels import pixel_array

    try:
        return np.asarray(pixel_array(ds, index=index))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad or unsupported data
        ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown"))
        raise ImageError(
            "corrupt_image", f"The DICOM pixel data could not be decoded (transfer syntax {ts})."
        ) from exc


def _read_dicom(
    data: bytes,
    frame: int | None,
    max_pixels: int | None,
    max_frames: int | None,
    max_decoded_bytes: int | None,
) -> LoadedImage:
    import pydicom

    # Every header value is read here, before any pixel is decoded: pydicom converts elements
    # lazily and a malformed one raises almost anything (odd lengths, unknown VRs, infinities,
    # sequences nested deep enough for a RecursionError).
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        if "PixelData" not in ds:
            raise ImageError("empty_image", "The DICOM file holds no pixel data.")
        rows, cols, n_frames = check_dicom_size(ds, max_pixels, max_frames, max_decoded_bytes)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        meta: dict[str, Any] = {
            "frames": n_frames,
            "photometric": photometric,
            "modality": str(ds.get("Modality", "")),
            "transfer_syntax": str(
                getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")
            ),
        }
        index = None
        if n_frames > 1:
            index = n_frames // 2 if frame is None else frame
            if not 0 <= index < n_frames:
                raise ImageError("bad_frame", f"Frame {index} does not exist (0..{n_frames - 1}).")
            meta["frame"] = index
        else:
            _single_frame(frame, "DICOM")
        slope, intercept = 1.0, 0.0
        if photometric.startswith("MONOCHROME"):
            slope = dicom_float(ds, "RescaleSlope", 1.0) or 1.0
            intercept = dicom_float(ds, "RescaleIntercept", 0.0)
        _check_codestream(ds, index, n_frames, rows, cols)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - see above
        raise ImageError("corrupt_image", "The DICOM file could not be parsed.") from exc
    arr = _dicom_pixels(ds, index)
    if photometric.startswith("MONOCHROME"):
        arr = arr.astype(np.float64) * slope + intercept
        if photometric == "MONOCHROME1":
            # MONOCHROME1 shows low values bright: invert so all inputs share one convention.
            arr = arr.max() - arr
    elif photometric in ("YBR_FULL", "YBR_FULL_422") and int(pydicom.__version__.split(".")[0]) < 3:
        # pydicom >= 3 already returns RGB from pixel_array (as_rgb=True); converting again
        # would scramble the colours.
        from pydicom.pixel_data_handlers.util import convert_color_space

        arr = convert_color_space(arr, photometric, "RGB")
    return LoadedImage(np.asarray(arr), "dicom", meta)


def nifti_mid_sagittal(
    volume: np.ndarray, affine: np.ndarray, index: int | None = None
) -> np.ndarray:
    """Take a sagittal slice from a 3D volume, shown superior-up and anterior-left.

    The volume is reoriented to RAS first, so the first axis runs left to right and the
    sagittal plane is axis 0 whatever the acquisition orientation.
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(volume, ornt)
    idx = ras.shape[0] // 2 if index is None else index
    if not 0 <= idx < ras.shape[0]:
        raise ImageError("bad_frame", f"Sagittal slice {idx} is outside 0..{ras.shape[0] - 1}.")
    sl = ras[idx]  # axes: (A, S)
    return np.flipud(np.fliplr(sl.T)) if sl.ndim == 2 else sl


def nifti_declared_bytes(header: bytes) -> int:
    """The voxel data a NIfTI-1/2 header declares (product of its dimensions x bytes per voxel,
    8 bytes when scl_slope/scl_inter scale it: nibabel then returns float64)."""
    import nibabel as nib

    klass = nib.Nifti2Header if int.from_bytes(header[:4], "little") == 540 else nib.Nifti1Header
    try:
        hdr = klass.from_fileobj(io.BytesIO(header), check=False)
        shape = hdr.get_data_shape()
        itemsize = np.dtype(hdr.get_data_dtype()).itemsize
        slope, inter = hdr.get_slope_inter()
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad headers
        raise ImageError("corrupt_image", "The NIfTI header could not be read.") from exc
    if slope is not None and (slope, inter) != (1.0, 0.0):
        itemsize = max(itemsize, 8)
    total = itemsize
    for dim in shape:
        total *= max(1, int(dim))
    return total


def nifti_bytes(data: bytes, max_decoded_bytes: int) -> bytes:
    """The uncompressed NIfTI file, its declared size checked before anything is inflated."""
    gz = data.startswith(b"\x1f\x8b")
    header = inflate(data, max_decoded_bytes, head=540) if gz else data[:540]
    declared = nifti_declared_bytes(header)
    if declared > max_decoded_bytes:
        raise ImageError(
            "too_large",
            f"The NIfTI volume declares {_amount(declared)} bytes of voxels; the limit is "
            f"{max_decoded_bytes:,}.",
        )
    # The header and the extensions come before the voxels.
    return inflate(data, max_decoded_bytes + 64 * 1024) if gz else data


def _nifti_sagittal(
    img: Any, shape: tuple[int, ...], tail: tuple[int, ...], index: int | None
) -> tuple[np.ndarray, int]:
    """The sagittal slice ``index`` (the middle one when None) of a 3D volume and its index, as
    :func:`nifti_mid_sagittal` gives it, reading (and scaling) only that slice's voxels."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(img.affine)
    if np.isnan(ornt).any():
        raise ImageError("corrupt_image", "The NIfTI affine gives no orientation for every axis.")
    axis = int(np.flatnonzero(ornt[:, 0] == 0)[0])  # the stored axis that runs left-right
    n = shape[axis]
    idx = n // 2 if index is None else index
    if not 0 <= idx < n:
        raise ImageError("bad_frame", f"Sagittal slice {idx} is outside 0..{n - 1}.")
    stored = n - 1 - idx if ornt[axis, 1] < 0 else idx
    slicer: list[Any] = [slice(None)] * 3
    slicer[axis] = slice(stored, stored + 1)
    slab = np.asanyarray(img.dataobj[(*slicer, *tail)])
    return nifti_mid_sagittal(slab, img.affine, 0), idx


def _read_nifti(
    data: bytes, frame: int | None, max_pixels: int | None, max_decoded_bytes: int
) -> LoadedImage:
    import nibabel as nib

    raw = nifti_bytes(data, max_decoded_bytes)
    try:
        fh = nib.FileHolder(fileobj=io.BytesIO(raw))
        klass = nib.Nifti2Image if int.from_bytes(raw[:4], "little") == 540 else nib.Nifti1Image
        img = klass.from_file_map({"header": fh, "image": fh})
        shape = tuple(int(d) for d in img.shape)
        meta: dict[str, Any] = {"shape": list(shape)}
        tail: tuple[int, ...] = ()
        if len(shape) == 4:
            shape, tail = shape[:3], (0,)  # the first volume of a series
            meta["volume_index"] = 0
        if len(shape) == 3 and 1 not in shape:
            _check_pixels(shape[1:], max_pixels)
            sl, meta["sagittal_index"] = _nifti_sagittal(img, shape, tail, frame)
        elif len(shape) in (2, 3):
            # One slice's voxels at most: a 2D image, or a volume one voxel thick.
            vol = np.asanyarray(img.dataobj[(..., *tail)])
            sl = np.squeeze(vol) if vol.ndim == 3 else vol
            if sl.ndim != 2:
                raise ImageError(
                    "unsupported_format", f"Unsupported NIfTI dimensionality {sl.ndim}D."
                )
            _single_frame(frame, "NIfTI image")
        else:
            raise ImageError(
                "unsupported_format", f"Unsupported NIfTI dimensionality {len(shape)}D."
            )
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad headers
        raise ImageError("corrupt_image", "The NIfTI file could not be read.") from exc
    _check_pixels(sl.shape, max_pixels)
    # A slice read from a big-endian file keeps its byte order; the rest of the code wants native.
    return LoadedImage(np.asarray(sl, dtype=sl.dtype.newbyteorder("=")), "nifti", meta)


def read_image(
    source: bytes | str | Path,
    *,
    frame: int | None = None,
    max_pixels: int | None = 64_000_000,
    max_frames: int | None = 2_000,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> LoadedImage:
    """Decode one 2D slice from PNG, JPEG, .npy, DICOM or NIfTI bytes (or a file path).

    Args:
        source: the raw bytes, or a path to read them from.
        frame: for multi-frame DICOM / 3D arrays / NIfTI volumes, which frame or sagittal slice;
            the middle one when None. A single-frame input has frame 0 only.
        max_pixels: reject slices with more pixels than this (``too_large``).
        max_frames: reject DICOM with more frames than this (``too_large``).
        max_decoded_bytes: reject files whose pixel data (all DICOM frames, the NIfTI voxels,
            an inflated gzip stream) would be larger than this, before decoding it.

    Returns:
        The decoded slice (2D, or 2D with colour channels last) with its format and metadata.

    Raises:
        ImageError: with code unsupported_format, corrupt_image, empty_image, too_large or
            bad_frame.
    """
    data = Path(source).read_bytes() if isinstance(source, str | Path) else bytes(source)
    fmt = sniff_format(data)
    if fmt in ("png", "jpeg"):
        _single_frame(frame, f"{fmt.upper()} image")
        loaded = _read_raster(data, fmt, max_pixels)
    elif fmt == "npy":
        loaded = _read_npy(data, frame, max_pixels, max_decoded_bytes)
    elif fmt == "dicom":
        loaded = _read_dicom(data, frame, max_pixels, max_frames, max_decoded_bytes)
    else:
        loaded = _read_nifti(data, frame, max_pixels, max_decoded_bytes)
    if loaded.pixels.size == 0:
        raise ImageError("empty_image", "The image has no pixels.")
    return loaded


def require_content(pixels: np.ndarray) -> None:
    """Raise ``empty_image`` for a slice with no contrast at all (every pixel equal)."""
    arr = np.asarray(pixels, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0 or float(finite.max()) == float(finite.min()):
        raise ImageError("empty_image", "The image is blank: every pixel has the same value.")
