"""How the client reads a server's refusals: :class:`ClientError` and ``Retry-After``."""

from __future__ import annotations

import email.utils
import time

import httpx

# Statuses worth waiting for: the server is busy or briefly away.
RETRY_STATUSES = {429, 502, 503, 504}
MAX_RETRY_AFTER_S = 300.0


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
        if self.status is None:
            return False
        return 400 <= self.status < 500 and self.status not in (408, 429)


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


def error_from(response: httpx.Response) -> ClientError:
    """The :class:`ClientError` for an error response, whether or not its body is JSON."""
    try:
        body = response.json()
        return ClientError(
            str(body.get("code", "error")), str(body.get("message", "")), response.status_code
        )
    except (ValueError, AttributeError):
        return ClientError("http_error", response.text[:200], response.status_code)
