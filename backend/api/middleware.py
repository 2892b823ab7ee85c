"""Pure ASGI middleware around the whole app: security headers, the body-limit answer as JSON,
and the guard that keeps the public default secret off any non-loopback address.

Pure ASGI (not ``BaseHTTPMiddleware``) so nothing here buffers or re-reads a request body.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.core.config import Settings, is_loopback

log = logging.getLogger(__name__)

# Starlette keeps the body limit that applies to the request here while the request runs.
BODY_LIMIT_SCOPE_KEY = "starlette.max_body_size"

# The web app: its own scripts and styles (Mantine writes its CSS variables inline), images of
# results as blob: URLs, no frames, no plugins, no other origins.
APP_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' blob: data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# The interactive API docs load Swagger UI / ReDoc from their CDN, as FastAPI serves them.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "worker-src 'self' blob:; frame-ancestors 'none'"
)
# JSON and images: nothing to run, nothing to frame.
API_CSP = "default-src 'none'; frame-ancestors 'none'"

COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


def csp_for(path: str) -> str:
    if path == "/app" or path.startswith("/app/"):
        return APP_CSP
    if path in ("/docs", "/redoc") or path.startswith("/docs/"):
        return DOCS_CSP
    return API_CSP


def human_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def too_large_body(limit: int | None) -> bytes:
    where = f"the {human_bytes(limit)} limit" if limit is not None else "the limit"
    body = {
        "code": "too_large",
        "message": f"The request body is larger than {where} of this endpoint.",
    }
    return json.dumps(body).encode()


class SecurityHeaders:
    """Security headers on every response; a plain-text 413 from the body limiter becomes the
    API's JSON error (the limiter answers before any route when the declared length is over)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = csp_for(scope.get("path", "")).encode()
        held: list[Message] = []
        replaced = False

        async def send_with_headers(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the rest of the plain-text body that was replaced
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _OURS]
                headers += [*COMMON_HEADERS, (b"content-security-policy", csp)]
                message = {**message, "headers": headers}
                if message["status"] == 413 and _is_plain(headers):
                    held.append(message)
                    return
            elif held and message["type"] == "http.response.body":
                await _send_json_413(send, held.pop(), scope.get(BODY_LIMIT_SCOPE_KEY))
                replaced = True
                return
            await send(message)

        await self.app(scope, receive, send_with_headers)


_OURS = {name for name, _ in COMMON_HEADERS} | {b"content-security-policy"}


def _is_plain(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"text/plain") for k, v in headers)


async def _send_json_413(send: Send, start: Message, limit: Any) -> None:
    body = too_large_body(int(limit) if isinstance(limit, int) else None)
    headers = [
        (k, v) for k, v in start["headers"] if k.lower() not in (b"content-type", b"content-length")
    ]
    headers += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        # The client may still be sending a body nobody will read.
        (b"connection", b"close"),
    ]
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class DefaultSecretGuard:
    """With the public default secret, serve only connections that arrived on a loopback
    address, whatever address the server was told to bind (``uvicorn --host 0.0.0.0``)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.settings.uses_default_secret:
            server = scope.get("server")
            host = str(server[0]) if server else ""
            if server is not None and not is_loopback(host):
                if not self._warned:
                    self._warned = True
                    log.critical(
                        "refusing requests on %s: the public default secret is in use; set "
                        "SPONDYSCAN_SECRET_KEY before serving beyond this machine",
                        host,
                    )
                body = json.dumps(
                    {
                        "code": "insecure_configuration",
                        "message": "This server uses the public default secret and refuses "
                        "connections from other machines; set SPONDYSCAN_SECRET_KEY.",
                    }
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            *COMMON_HEADERS,
                            (b"content-security-policy", API_CSP.encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
