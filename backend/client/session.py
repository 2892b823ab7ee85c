"""``SpondyscanClient``: the HTTP API over httpx, with authentication and retries.

It authenticates with an API key (or a bearer token), waits and retries when the server answers
503/429 (honouring ``Retry-After``) or cannot be reached for a moment, and raises
:class:`~backend.client.errors.ClientError` with the server's error code otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpx

from backend.client.errors import RETRY_STATUSES, ClientError, error_from, retry_after_seconds

NOTICE = "Research use only - not a diagnosis."


def _analysis_form(
    models: Sequence[str] | None, explain: bool, method: str | None, faithfulness: bool
) -> dict[str, Any]:
    """The form fields shared by ``POST /analyses`` and ``POST /jobs`` (no ``method``: each
    model's measured best one)."""
    form: dict[str, Any] = {
        "explain": str(explain).lower(),
        "faithfulness": str(faithfulness).lower(),
    }
    if method:
        form["method"] = method
    if models:
        form["models"] = list(models)
    return form


def _backoff(attempt: int) -> float:
    return min(2.0**attempt * 0.5, 30.0)


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

    async def request(
        self, method: str, path: str, *, resend: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """Send a request, waiting out 503/429 (Retry-After) and brief connection failures.

        ``resend=False`` is for a request that must not run twice (it creates something): it is
        sent again only when the server cannot have acted on it (no connection was made, or a
        503/429 refusal), not after a timeout or a gateway error mid-way.
        """
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = await self._http.request(method, path, **kwargs)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if last or not (resend or unsent):
                    raise ClientError("unreachable", f"{type(exc).__name__}: {exc}") from exc
                self.retries += 1
                await self._sleep(_backoff(attempt))
                continue
            retry = resend or response.status_code in (429, 503)
            if response.status_code in RETRY_STATUSES and retry and not last:
                self.retries += 1
                wait = retry_after_seconds(response)
                await self._sleep(wait if wait is not None else _backoff(attempt))
                continue
            if response.status_code >= 400:
                raise error_from(response)
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
        method: str | None = None,
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
        method: str | None = None,
        faithfulness: bool = True,
    ) -> dict[str, Any]:
        """Queue many images (or one zip) as a job (``POST /jobs``); returns it at once."""
        form = _analysis_form(models, explain, method, faithfulness)
        parts = [("files", (name, data)) for name, data in files]
        response = await self.request("POST", "/jobs", resend=False, files=parts, data=form)
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

    # ------------------------------------------------------------------ studies

    async def submit_study(
        self,
        files: Iterable[tuple[str, bytes]],
        *,
        models: Sequence[str] | None = None,
        explain: bool = True,
        method: str | None = None,
        allow_out_of_domain: bool = False,
    ) -> dict[str, Any]:
        """Send a whole series (its instances, one zip or one NIfTI) as a study
        (``POST /studies``); returns it at once, queued."""
        form: dict[str, Any] = {
            "explain": str(explain).lower(),
            "allow_out_of_domain": str(allow_out_of_domain).lower(),
        }
        if method:
            form["method"] = method
        if models:
            form["models"] = list(models)
        parts = [("files", (name, data)) for name, data in files]
        response = await self.request("POST", "/studies", resend=False, files=parts, data=form)
        return dict(response.json())

    async def stow(self, instances: Sequence[bytes]) -> dict[str, Any]:
        """Store one series' instances by STOW-RS (``POST /dicomweb/studies``), which starts a
        study analysis; returns ``study_id``, ``study_url``, the ``stored`` count and the
        ``refused`` instances (``sop_instance_uid``, None when the server could not read one,
        and ``failure_reason``)."""
        from backend.interop import multipart

        body, content_type = multipart.build(instances)
        r = await self.request(
            "POST",
            "/dicomweb/studies",
            resend=False,  # each accepted request starts a study
            content=body,
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        )
        answer = dict(r.json())

        def first(item: dict[str, Any], tag: str) -> Any:
            return (item.get(tag, {}).get("Value") or [None])[0]

        return {
            "study_id": r.headers.get("X-Spondyscan-Study-Id"),
            "study_url": r.headers.get("Location"),
            "stored": len(answer.get("00081199", {}).get("Value", [])),
            "refused": [
                {
                    "sop_instance_uid": first(item, "00081155"),
                    "failure_reason": first(item, "00081197"),
                }
                for item in answer.get("00081198", {}).get("Value", [])
            ],
        }

    async def get_study(self, study_id: str) -> dict[str, Any]:
        return dict((await self.request("GET", f"/studies/{study_id}")).json())

    async def wait_study(
        self,
        study_id: str,
        *,
        poll: float = 1.0,
        timeout: float | None = None,
        on_progress: Any = None,
    ) -> dict[str, Any]:
        """Poll until the study is done, failed or cancelled; ``on_progress(study)`` each time."""
        started = time.monotonic()
        while True:
            study = await self.get_study(study_id)
            if on_progress is not None:
                on_progress(study)
            if study["status"] in ("done", "failed", "cancelled"):
                return study
            if timeout is not None and time.monotonic() - started > timeout:
                raise TimeoutError(f"study {study_id} still {study['status']} after {timeout}s")
            await self._sleep(poll)

    async def study_mask(self, study_id: str) -> bytes:
        """The study's 3D mask (NIfTI, gzipped)."""
        return (await self.request("GET", f"/studies/{study_id}/mask.nii.gz")).content
