"""Exception handlers: every error response is ``{"code": ..., "message": ...}`` JSON."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.api.middleware import BODY_LIMIT_SCOPE_KEY, too_large_body
from backend.core.errors import AppError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        body["detail"] = jsonable_encoder(detail)
    return body


async def _app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return JSONResponse(
        error_body(exc.code, exc.message, exc.detail),
        status_code=exc.status_code,
        headers=exc.headers,
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "request"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    missing_file = any(e.get("type") == "missing" and "file" in e.get("loc", ()) for e in errors)
    if missing_file:
        code, message = "missing_file", "Upload the image as the multipart form field 'file'."
    else:
        code = "validation_error"
        message = f"Invalid {_field(tuple(first.get('loc', ())))}: {first.get('msg', 'invalid')}."
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
    return JSONResponse(error_body(code, message, detail), status_code=422)


# The form parser's refusals (Starlette MultiPartException), by the start of their message.
_FORM_LIMITS = {
    "Too many files": ("too_many_files", 413),
    "Too many fields": ("too_many_fields", 413),
    "Field exceeded maximum size": ("field_too_large", 413),
}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, "error")
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404 and message == "Not Found":
        message = "No such endpoint or resource."
    elif status == 413:
        limit = request.scope.get(BODY_LIMIT_SCOPE_KEY)
        return JSONResponse(
            json.loads(too_large_body(limit if isinstance(limit, int) else None)),
            status_code=413,
            headers={"Connection": "close"},
        )
    elif status == 400:
        for prefix, (form_code, form_status) in _FORM_LIMITS.items():
            if message.startswith(prefix):
                return JSONResponse(error_body(form_code, message), status_code=form_status)
        if message == "There was an error parsing the body":
            # Undecodable bytes where JSON or a form was expected: a validation error like any
            # other malformed body.
            body = error_body("bad_body", "The request body could not be parsed.")
            return JSONResponse(body, status_code=422)
    elif status == 405:
        headers = {**(exc.headers or {}), "Allow": _allowed_methods(request)}
        return JSONResponse(error_body(code, message), status_code=405, headers=headers)
    return JSONResponse(error_body(code, message), status_code=status, headers=exc.headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "__none__"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _unhandled(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(
        error_body("internal_error", "Something went wrong on the server; it has been logged."),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
