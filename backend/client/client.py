"""A small Python client for a spondyscan server, and the resumable folder batch.

``SpondyscanClient`` wraps the HTTP API with httpx: it authenticates with an API key (or a
bearer token), waits and retries when the server answers 503/429 (honouring ``Retry-After``) or
cannot be reached for a moment, and raises :class:`ClientError` with the server's error code
otherwise. :func:`analyze_folder` uploads every image of a folder with bounded concurrency and
records each finished file in ``results.csv`` and a journal beside it (``results.csv.state``),
keyed by relative path and SHA-256, so running it again uploads only what is missing.

The code lives in ``errors`` / ``session`` (the HTTP side) and ``journal`` / ``batch`` (the
folder batch); this module keeps the names importable from where scripts already import them.

Results are for research use only - not a diagnosis.
"""

from __future__ import annotations

from backend.client.batch import (
    IMAGE_SUFFIXES,
    BatchSummary,
    analyze_folder,
    analyze_folder_async,
    find_images,
)
from backend.client.errors import (
    MAX_RETRY_AFTER_S,
    RETRY_STATUSES,
    ClientError,
    retry_after_seconds,
)
from backend.client.journal import CSV_COLUMNS, FileResult, ResultsJournal
from backend.client.session import NOTICE, SpondyscanClient

__all__ = [
    "CSV_COLUMNS",
    "IMAGE_SUFFIXES",
    "MAX_RETRY_AFTER_S",
    "NOTICE",
    "RETRY_STATUSES",
    "BatchSummary",
    "ClientError",
    "FileResult",
    "ResultsJournal",
    "SpondyscanClient",
    "analyze_folder",
    "analyze_folder_async",
    "find_images",
    "retry_after_seconds",
]
