"""Errors a client can act on: an HTTP status, a machine-readable code and one human sentence.

Services raise these; the API turns them into ``{"code": ..., "message": ...}`` JSON bodies.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base class: every 4xx/503 the API returns on purpose is one of these."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers
        self.detail = detail


class BadInput(AppError):
    """An uploaded file or parameter that cannot be used."""

    status_code = 400
    code = "bad_input"


# Status per ml.io.ImageError code: wrong type and oversize have their own HTTP statuses.
IMAGE_ERROR_STATUS = {
    "unsupported_format": 415,
    "too_large": 413,
    "corrupt_image": 400,
    "empty_image": 400,
    "bad_frame": 400,
}


class Unauthorized(AppError):
    status_code = 401
    code = "not_authenticated"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class ServiceBusy(AppError):
    """The inference queue is full: retry after a moment."""

    status_code = 503
    code = "busy"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, int(retry_after)))})
        self.retry_after = retry_after


class ModelUnavailable(AppError):
    """A model the server knows of could not be loaded (its bundle is broken)."""

    status_code = 503
    code = "model_unavailable"


class TooManyRequests(AppError):
    """A rate limit, a lockout or a per-user quota of things at once: retry after a while."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float = 1) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, code=code, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds


class NotReady(AppError):
    status_code = 503
    code = "not_ready"
