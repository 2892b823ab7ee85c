"""Sizes read from compressed DICOM frames (JPEG, JPEG-LS, JPEG 2000) before decoding them."""

from __future__ import annotations

import re
import struct
from typing import Any

# A marker (after any 0xFF fill bytes) in a JPEG or JPEG-LS codestream, and the frame headers
# (SOF0-15 less DHT, JPG, DAC; SOF55 of JPEG-LS) that give its size.
_JPEG_MARKER = re.compile(rb"\xff+([^\xff])", re.DOTALL)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def _jpeg_shape(src: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from a JPEG or JPEG-LS frame header, None if there is none."""
    pos = 2  # after SOI
    while (m := _JPEG_MARKER.match(src, pos)) is not None:
        marker, pos = m.group(1)[0], m.end()
        if marker in _JPEG_SOF:
            if len(src) < pos + 8:
                return None
            _, _, rows, cols, comps = struct.unpack(">HBHHB", src[pos : pos + 8])
            return rows, cols, comps
        if marker in (0xD9, 0xDA):  # EOI or a scan before any frame header
            return None
        if not (0xD0 <= marker <= 0xD7 or marker == 0x01):  # those stand alone, no length
            pos += int.from_bytes(src[pos : pos + 2], "big")
    return None


def _j2k_shape(src: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from a JPEG 2000 SIZ segment (raw or in a JP2 file)."""
    start = 0
    if src.startswith(_JP2_SIGNATURE):
        start = len(_JP2_SIGNATURE)
        while True:  # boxes: 4-byte length (1: 8-byte length follows), 4-byte type
            if len(src) < start + 16:
                return None
            size, kind = struct.unpack(">I4s", src[start : start + 8])
            head = 8
            if size == 1:
                size, head = struct.unpack(">Q", src[start + 8 : start + 16])[0], 16
            if kind == b"jp2c":
                start += head
                break
            if size < head:
                return None
            start += size
    if src[start : start + 4] != b"\xff\x4f\xff\x51" or len(src) < start + 42:
        return None
    xsiz, ysiz, xoff, yoff = struct.unpack(">4I", src[start + 8 : start + 24])
    (comps,) = struct.unpack(">H", src[start + 40 : start + 42])
    return ysiz - yoff, xsiz - xoff, comps


def frame_mismatch(
    ds: Any, index: int | None, n_frames: int, rows: int, cols: int, samples: int
) -> str | None:
    """Why a JPEG, JPEG-LS or JPEG 2000 frame of ``ds`` cannot be decoded safely, or None.

    The decoder allocates what the codestream says, which the limits (checked on the DICOM
    header's rows, columns and samples) never saw: a frame whose own header gives another size,
    or none, is refused before it is decoded. Uncompressed and RLE data decode into the size the
    DICOM header gives (None).
    """
    from pydicom import uid
    from pydicom.encaps import get_frame

    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts in uid.JPEGTransferSyntaxes or ts in uid.JPEGLSTransferSyntaxes:
        parse = _jpeg_shape
    elif ts in uid.JPEG2000TransferSyntaxes:
        parse = _j2k_shape
    else:
        return None
    offsets = None
    if "ExtendedOffsetTable" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    src = get_frame(ds.PixelData, index or 0, number_of_frames=n_frames, extended_offsets=offsets)
    samples = max(1, samples)
    shape = parse(src)
    if shape is None:
        return "The DICOM compressed frame has no readable header."
    if shape != (rows, cols, samples):
        return (
            f"The DICOM compressed frame is {shape[0]}x{shape[1]}x{shape[2]} (rows x columns x "
            f"samples); the header says {rows}x{cols}x{samples}."
        )
    return None
