"""``multipart/related`` bodies, as DICOMweb sends and expects them (PS3.18 8.6.1.2)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_TYPE = re.compile(r'type="?([^";]+)"?', re.IGNORECASE)


class MultipartError(ValueError):
    """The body is not the multipart/related message its Content-Type announces."""


def boundary_of(content_type: str) -> str:
    """The boundary of a ``multipart/related`` Content-Type (MultipartError if none)."""
    if not content_type.lower().startswith("multipart/related"):
        raise MultipartError("The body must be multipart/related.")
    found = _BOUNDARY.search(content_type)
    if not found:
        raise MultipartError("The multipart/related Content-Type has no boundary.")
    return found.group(1).strip()


def part_type(content_type: str) -> str | None:
    """The ``type`` parameter of a multipart/related Content-Type (e.g. application/dicom)."""
    found = _TYPE.search(content_type)
    return found.group(1).strip().lower() if found else None


def count(body: bytes, boundary: str) -> int:
    """How many parts a body can hold (its delimiters less the close one), without splitting it."""
    return max(0, body.count(b"--" + boundary.encode("latin-1")) - 1)


def split(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a body: (lower-cased headers, payload) each, in order."""
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise MultipartError("The multipart body has no parts.")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("A part of the multipart body has no header end.")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip():
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload[:-2] if payload.endswith(b"\r\n") else payload))
    return parts


def build(parts: Sequence[bytes], media_type: str = "application/dicom") -> tuple[bytes, str]:
    """A multipart/related body of these payloads and its Content-Type header."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for payload in parts:
        out += f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode()
        out += payload + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f'multipart/related; type="{media_type}"; boundary={boundary}'
