"""A small Python client for a spondyscan server, and the resumable folder batch.

``SpondyscanClient`` wraps the HTTP API with httpx: it authenticates with an API key (or a
bearer token), waits and retries when the server answers 503/429 (honouring ``Retry-After``) or
cannot be reached for a moment, and raises :class:`ClientError` with the server's error code
otherwise. :func:`analyze_folder` uploads every image of a folder with bounded concurrency and
records each finished file in ``results.csv`` and a journal beside it (``results.csv.state``),
keyed by relative path and SHA-256, so running it again uploads only what is missing.

Results are for research use only - not a diagnosis.
"""

from __future__ import annotations

import asyncio
import csv
import email.utils
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

NOTICE = "Research use only - not a diagnosis."
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".ima", ".nii", ".nii.gz", ".npy")
# Statuses worth waiting for: the server is busy or briefly away.
RETRY_STATUSES = {429, 502, 503, 504}
MAX_RETRY_AFTER_S = 300.0


def _analysis_form(
    models: Sequence[str] | None, explain: bool, method: str, faithfulness: bool
) -> dict[str, Any]:
    """The form fields shared by ``POST /analyses`` and ``POST /jobs``."""
    form: dict[str, Any] = {
        "explain": str(explain).lower(),
        "method": method,
        "faithfulness": str(faithfulness).lower(),
    }
    if models:
        form["models"] = list(models)
    return form


class ClientError(Exception):
    """A request the server refused or could not serve; ``code`` is its machine-readable code."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    @property
    def permanent(self) -> bool:
        """The same request would fail again (bad input, unknown model, no access)."""
        return (
            self.status is not None
            and 400 <= self.status < 500
            and self.status
            not in (
                408,
                429,
            )
        )


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The server's Retry-After (seconds or an HTTP date), capped; None when absent."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _error_from(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
        return ClientError(
            str(body.get("code", "error")), str(body.get("message", "")), response.status_code
        )
    except (ValueError, AttributeError):
        return ClientError("http_error", response.text[:200], response.status_code)


class SpondyscanClient:
    """Async client for one spondyscan server.

    Args:
        server: base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``X-API-Key`` (service accounts, scripts).
        token: a bearer token from ``POST /auth/token``, instead of a key.
        timeout: seconds per request (an analysis with explanations can take a while).
        max_retries: how often a busy (503/429) or unreachable server is retried per request.
        transport: an httpx transport (tests pass the app's ASGI transport).
    """

    def __init__(
        self,
        server: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 300.0,
        max_retries: int = 10,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "spondyscan-client"}
        if api_key:
            headers["X-API-Key"] = api_key
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.max_retries = max_retries
        self.retries = 0
        self._http = httpx.AsyncClient(
            base_url=server.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def __aenter__(self) -> SpondyscanClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request, waiting out 503/429 (Retry-After) and brief connection failures."""
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = await self._http.request(method, path, **kwargs)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                if last:
                    raise ClientError("unreachable", f"{type(exc).__name__}: {exc}") from exc
                self.retries += 1
                await self._sleep(min(2.0**attempt * 0.5, 30.0))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                self.retries += 1
                wait = retry_after_seconds(response)
                await self._sleep(wait if wait is not None else min(2.0**attempt * 0.5, 30.0))
                continue
            if response.status_code >= 400:
                raise _error_from(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ one image

    async def analyze(
        self,
        data: bytes,
        filename: str = "image",
        *,
        models: Sequence[str] | None = None,
        explain: bool = True,
        method: str = "gradcam",
        faithfulness: bool = True,
    ) -> dict[str, Any]:
        """The full pipeline on one image (``POST /analyses``); the stored result."""
        form = _analysis_form(models, explain, method, faithfulness)
        response = await self.request(
            "POST", "/analyses", files={"file": (filename, data)}, data=form
        )
        return dict(response.json())

    # ------------------------------------------------------------------ jobs

    async def submit_job(
        self,
        files: Iterable[tuple[str, bytes]],
        *,
        models: Sequence[str] | None = None,
        explain: bool = True,
        method: str = "gradcam",
        faithfulness: bool = True,
    ) -> dict[str, Any]:
        """Queue many images (or one zip) as a job (``POST /jobs``); returns it at once."""
        form = _analysis_form(models, explain, method, faithfulness)
        parts = [("files", (name, data)) for name, data in files]
        response = await self.request("POST", "/jobs", files=parts, data=form)
        return dict(response.json())

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return dict((await self.request("GET", f"/jobs/{job_id}")).json())

    async def list_jobs(self, *, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        params = {"limit": limit, "offset": offset}
        return dict((await self.request("GET", "/jobs", params=params)).json())

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict((await self.request("POST", f"/jobs/{job_id}/cancel")).json())

    async def wait_job(
        self, job_id: str, *, poll: float = 1.0, timeout: float | None = None
    ) -> dict[str, Any]:
        """Poll until the job is completed or cancelled with nothing still running."""
        started = time.monotonic()
        while True:
            job = await self.get_job(job_id)
            if job["status"] in ("completed", "cancelled") and not job["progress"]["running"]:
                return job
            if timeout is not None and time.monotonic() - started > timeout:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
            await self._sleep(poll)

    async def job_results_csv(self, job_id: str) -> str:
        return (await self.request("GET", f"/jobs/{job_id}/results.csv")).text

    async def job_results_json(self, job_id: str) -> dict[str, Any]:
        return dict((await self.request("GET", f"/jobs/{job_id}/results.json")).json())


# ---------------------------------------------------------------------- resumable folder batch

CSV_COLUMNS = [
    "path",
    "sha256",
    "status",
    "error_code",
    "error_message",
    "analysis_id",
    "model",
    "model_version",
    "as_status",
    "p_positive",
    "as_probability",
    "stage",
    "stage_probability",
    "faithfulness_score",
    "roi_x1",
    "roi_y1",
    "roi_x2",
    "roi_y2",
    "research_use_only",
]


@dataclass
class FileResult:
    """What happened to one file: analysed (``done``) or refused by the server (``failed``)."""

    path: str
    sha256: str
    status: str
    error_code: str = ""
    error_message: str = ""
    result: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.path, self.sha256

    def rows(self) -> list[dict[str, Any]]:
        base = {
            "path": self.path,
            "sha256": self.sha256,
            "status": self.status,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "research_use_only": "true",
        }
        if not self.result:
            return [base]
        res = self.result
        roi = ((res.get("segmentation") or {}).get("roi")) or {}
        faith = {
            e["model"]["key"]: (e.get("faithfulness") or {}).get("score")
            for e in res.get("explanations") or []
        }
        rows = []
        for c in res.get("classifications") or [{}]:
            model = (c.get("model") or {}).get("key", "")
            rows.append(
                {
                    **base,
                    "analysis_id": res.get("id", ""),
                    "model": model,
                    "model_version": (c.get("model") or {}).get("version", ""),
                    "as_status": c.get("as_status", ""),
                    "p_positive": (c.get("as_probabilities") or {}).get("positive", ""),
                    "as_probability": c.get("as_probability", ""),
                    "stage": c.get("stage", ""),
                    "stage_probability": c.get("stage_probability", ""),
                    "faithfulness_score": "" if faith.get(model) is None else faith[model],
                    "roi_x1": roi.get("x1", ""),
                    "roi_y1": roi.get("y1", ""),
                    "roi_x2": roi.get("x2", ""),
                    "roi_y2": roi.get("y2", ""),
                }
            )
        return rows


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


def _fsync_append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _write_atomic_text(path: Path, text: str) -> None:
    from ml.fsutil import write_atomic

    write_atomic(path, text.encode("utf-8"))


def _csv_text(rows: Iterable[dict[str, Any]], header: bool) -> str:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


class ResultsJournal:
    """results.csv plus its journal ``results.csv.state`` (one JSON line per finished file).

    A file counts as done once its journal line is on disk; the journal line is written after
    the file's CSV rows, so a crash in between leaves rows that the next run drops and redoes.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.state = self.out.with_name(self.out.name + ".state")
        self.finished: dict[tuple[str, str], str] = {}

    def load(self, *, retry_failed: bool = False) -> None:
        entries: list[dict[str, Any]] = []
        rewrite_state = False
        if self.state.exists():
            for line in self.state.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    rewrite_state = True  # a line cut short by a crash
                    continue
                if not isinstance(entry, dict) or "path" not in entry:
                    continue
                if retry_failed and entry.get("status") == "failed":
                    rewrite_state = True
                    continue
                entries.append(entry)
        self.finished = {(e["path"], e["sha256"]): e["status"] for e in entries}
        if rewrite_state:
            _write_atomic_text(self.state, "".join(json.dumps(e) + "\n" for e in entries))

        kept: list[dict[str, str]] = []
        dropped = False
        if self.out.exists():
            with open(self.out, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                dropped = reader.fieldnames != CSV_COLUMNS
                for row in reader:
                    if (row.get("path"), row.get("sha256")) in self.finished:
                        kept.append(row)
                    else:
                        dropped = True
        if dropped or not self.out.exists():
            self.out.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic_text(self.out, _csv_text(kept, header=True))

    def record(self, result: FileResult) -> None:
        _fsync_append(self.out, _csv_text(result.rows(), header=False))
        line = {"path": result.path, "sha256": result.sha256, "status": result.status}
        _fsync_append(self.state, json.dumps(line) + "\n")
        self.finished[result.key] = result.status


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


async def analyze_folder_async(
    client: SpondyscanClient,
    folder: Path,
    out: Path,
    *,
    concurrency: int = 4,
    models: Sequence[str] | None = None,
    explain: bool = True,
    method: str = "gradcam",
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

    keyed = await asyncio.to_thread(
        lambda: [(p, p.relative_to(folder).as_posix(), _sha256(p)) for p in files]
    )
    todo = [(p, rel, sha) for p, rel, sha in keyed if (rel, sha) not in journal.finished]
    summary.already_done = len(keyed) - len(todo)
    if summary.already_done:
        log.info("%d of %d files already done (from %s)", summary.already_done, len(keyed), out)

    queue: asyncio.Queue[tuple[Path, str, str]] = asyncio.Queue()
    for entry in todo:
        queue.put_nowait(entry)
    bar = tqdm(total=len(todo), unit="file", desc="analysing", disable=not progress)

    async def work() -> None:
        while True:
            try:
                path, rel, sha = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            data = await asyncio.to_thread(path.read_bytes)
            sha = hashlib.sha256(data).hexdigest()  # the bytes actually sent
            summary.uploads += 1
            try:
                body = await client.analyze(
                    data,
                    rel,
                    models=models,
                    explain=explain,
                    method=method,
                    faithfulness=faithfulness,
                )
                result = FileResult(rel, sha, "done", result=body)
                summary.done += 1
            except ClientError as exc:
                if not exc.permanent:
                    summary.to_retry += 1
                    summary.errors.append(f"{rel}: {exc}")
                    bar.update(1)
                    continue
                result = FileResult(rel, sha, "failed", exc.code, exc.message)
                summary.failed += 1
            journal.record(result)
            bar.update(1)
            if on_result is not None:
                on_result(result)

    try:
        await asyncio.gather(*(work() for _ in range(max(1, concurrency))))
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
