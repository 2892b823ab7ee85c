"""User-supplied text as the store keeps it: no control characters.

PostgreSQL refuses NUL in text and JSONB (SQLite takes it), and newlines or escapes in a name
would forge lines in logs and CSV exports; so names are cleaned where they come in and other
fields that must be one plain line are refused with a 422.
"""

from __future__ import annotations

import unicodedata


def has_control(text: str) -> bool:
    """True when ``text`` holds a control character (NUL, newline, escape, DEL, C1 controls)."""
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def no_control(text: str) -> str:
    """Pydantic validator: refuse control characters in a one-line field."""
    if has_control(text):
        raise ValueError("must not contain control characters (NUL, newlines, escapes)")
    return text


def clean_name(name: str | None, limit: int = 255) -> str | None:
    """A file name as stored: control characters dropped, at most its last ``limit`` characters
    (the end keeps the extension); None when nothing is left."""
    if not name:
        return None
    kept = "".join(ch for ch in str(name) if unicodedata.category(ch) != "Cc")
    return kept[-limit:] or None
