"""The web app under its own prefix: ``/app/...`` serves the built SPA, deep links included.

The API owns every other path, so nothing is decided by sniffing ``Accept`` or credentials:
``/app/assets/x.js`` is a file of the bundle, any other ``/app/...`` path is ``index.html`` (the
client-side router takes it from there), and ``/`` redirects to ``/app/``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response

from backend.core.errors import NotFound

PREFIX = "/app"
# index.html names the hashed asset files of the current build: never reuse a stale copy.
_INDEX_HEADERS = {"Cache-Control": "no-cache"}
# Hashed asset names change with their content: cache them for long.
_ASSET_HEADERS = {"Cache-Control": "public, max-age=31536000, immutable"}


def _file_in(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it is a file inside ``root`` (no escaping with ``..``)."""
    if not relative or "\x00" in relative:
        return None
    candidate = (root / relative).resolve()
    if candidate.is_file() and root in candidate.parents:
        return candidate
    return None


def spa_router(spa_dir: Path) -> APIRouter:
    """Routes serving the built web app from ``spa_dir`` (404 ``no_web_app`` until built)."""
    root = spa_dir.resolve()
    index = root / "index.html"
    router = APIRouter(include_in_schema=False)

    @router.get(PREFIX, response_model=None)
    async def app_root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=308)

    @router.get(PREFIX + "/{path:path}", response_model=None)
    async def app_page(path: str) -> Response:
        if not index.is_file():
            raise NotFound(
                "The web app is not built (`make spa`); the API docs are at /docs.",
                code="no_web_app",
            )
        asset = _file_in(root, path)
        if asset is not None and asset != index:
            headers = _ASSET_HEADERS if path.startswith("assets/") else None
            return FileResponse(asset, headers=headers)
        if path.startswith("assets/"):
            # A missing hashed asset is a stale page asking for an old build: say so plainly
            # instead of answering HTML where a script is expected.
            raise NotFound("No such file in the web app.", code="not_found")
        return FileResponse(index, headers=_INDEX_HEADERS)

    return router


def install_spa(app: FastAPI, spa_dir: Path) -> None:
    """Serve the web app under ``/app/`` and redirect ``/`` there."""
    app.include_router(spa_router(spa_dir), max_body_size=0)

    @app.get("/", include_in_schema=False, response_model=None)
    async def root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)
