"""The resumable folder batch: upload every image of a folder with bounded concurrency.

Each finished file goes to ``results.csv`` and its journal (see :mod:`backend.client.journal`),
so running the same batch again uploads only what is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend.client.errors import ClientError
from backend.client.journal import FileResult, ResultsJournal
from backend.client.session import SpondyscanClient

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".ima", ".nii", ".nii.gz", ".npy")

_Pending = tuple[Path, str, str]  # path, path relative to the folder, SHA-256


@dataclass
class BatchSummary:
    total: int = 0
    already_done: int = 0
    done: int = 0
    failed: int = 0
    to_retry: int = 0
    uploads: int = 0
    out: Path | None = None
    errors: list[str] = field(default_factory=list)


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def find_images(folder: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """Image files under ``folder`` (by suffix, or DICOM files without one), sorted."""
    skip = {p.resolve() for p in exclude}
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            if path.resolve() in skip:
                continue
            lower = name.lower()
            if lower.endswith(IMAGE_SUFFIXES) or ("." not in name and _looks_like_dicom(path)):
                found.append(path)
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


async def _pending(folder: Path, files: list[Path], journal: ResultsJournal) -> list[_Pending]:
    """The files the journal does not yet count as finished (hashing runs off the loop)."""
    keyed = await asyncio.to_thread(
        lambda: [(p, p.relative_to(folder).as_posix(), _sha256(p)) for p in files]
    )
    return [(p, rel, sha) for p, rel, sha in keyed if (rel, sha) not in journal.finished]


@dataclass
class _BatchRun:
    """What the concurrent workers of one batch share."""

    client: SpondyscanClient
    journal: ResultsJournal
    summary: BatchSummary
    bar: Any
    analysis: dict[str, Any]
    on_result: Callable[[FileResult], None] | None

    async def analyse(self, path: Path, rel: str) -> FileResult | None:
        """The file's outcome, or None when the failure may pass (retry on the next run)."""
        data = await asyncio.to_thread(path.read_bytes)
        sha = hashlib.sha256(data).hexdigest()  # the bytes actually sent
        self.summary.uploads += 1
        try:
            body = await self.client.analyze(data, rel, **self.analysis)
        except ClientError as exc:
            if not exc.permanent:
                self.summary.to_retry += 1
                self.summary.errors.append(f"{rel}: {exc}")
                return None
            self.summary.failed += 1
            return FileResult(rel, sha, "failed", exc.code, exc.message)
        self.summary.done += 1
        return FileResult(rel, sha, "done", result=body)

    async def work(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            try:
                path, rel, _sha = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await self.analyse(path, rel)
            if result is None:
                self.bar.update(1)
                continue
            self.journal.record(result)
            self.bar.update(1)
            if self.on_result is not None:
                self.on_result(result)


async def analyze_folder_async(
    client: SpondyscanClient,
    folder: Path,
    out: Path,
    *,
    concurrency: int = 4,
    models: Sequence[str] | None = None,
    explain: bool = True,
    method: str | None = None,
    faithfulness: bool = True,
    retry_failed: bool = False,
    progress: bool = True,
    on_result: Callable[[FileResult], None] | None = None,
) -> BatchSummary:
    """Analyse every image under ``folder`` not yet recorded in ``out``; see the module doc."""
    from tqdm import tqdm

    folder, out = Path(folder), Path(out)
    journal = ResultsJournal(out)
    journal.load(retry_failed=retry_failed)
    files = find_images(folder, exclude=[out, journal.state])
    summary = BatchSummary(total=len(files), out=out)

    todo = await _pending(folder, files, journal)
    summary.already_done = len(files) - len(todo)
    if summary.already_done:
        log.info("%d of %d files already done (from %s)", summary.already_done, len(files), out)

    queue: asyncio.Queue[_Pending] = asyncio.Queue()
    for entry in todo:
        queue.put_nowait(entry)
    bar = tqdm(total=len(todo), unit="file", desc="analysing", disable=not progress)
    analysis = {
        "models": models,
        "explain": explain,
        "method": method,
        "faithfulness": faithfulness,
    }
    run = _BatchRun(client, journal, summary, bar, analysis, on_result)
    try:
        await asyncio.gather(*(run.work(queue) for _ in range(max(1, concurrency))))
    finally:
        bar.close()
    return summary


def analyze_folder(
    folder: str | Path,
    out: str | Path,
    *,
    server: str,
    api_key: str | None = None,
    token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = 300.0,
    **options: Any,
) -> BatchSummary:
    """Synchronous wrapper of :func:`analyze_folder_async` with its own client."""

    async def main() -> BatchSummary:
        async with SpondyscanClient(
            server, api_key=api_key, token=token, transport=transport, timeout=timeout
        ) as client:
            return await analyze_folder_async(client, Path(folder), Path(out), **options)

    return asyncio.run(main())
