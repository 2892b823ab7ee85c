"""Python client for a spondyscan server (research use only - not a diagnosis)."""

from backend.client.client import (
    BatchSummary,
    ClientError,
    FileResult,
    SpondyscanClient,
    analyze_folder,
    analyze_folder_async,
)

__all__ = [
    "BatchSummary",
    "ClientError",
    "FileResult",
    "SpondyscanClient",
    "analyze_folder",
    "analyze_folder_async",
]
