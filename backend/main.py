"""The FastAPI application: create_app() wires settings, lifespan, routers, errors and the SPA."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute

from backend.api.errors import error_body, install_error_handlers
from backend.api.routes import artifacts, auth, health, history, inference, jobs, models
from backend.core.config import Settings, get_settings
from backend.schemas.common import RESEARCH_NOTICE
from backend.services.runtime import start_runtime

log = logging.getLogger(__name__)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spondyscan")
    except PackageNotFoundError:
        return "0.0.0"


TAGS = [
    {"name": "auth", "description": "Accounts, bearer tokens (OAuth2 password flow), API keys."},
    {"name": "inference", "description": "Segment, classify, explain, or run the whole pipeline."},
    {"name": "history", "description": "Your stored results."},
    {"name": "artifacts", "description": "Images of your results (owner only)."},
    {"name": "models", "description": "The installed model bundles and their cards."},
    {"name": "jobs", "description": "Batch jobs: many images or a zip, progress, results."},
    {"name": "health", "description": "Liveness and readiness probes."},
]

# First path segments that belong to the API; everything else may be a client-side route.
API_PREFIXES = {
    "auth",
    "segment",
    "classify",
    "explain",
    "analyses",
    "history",
    "models",
    "artifacts",
    "health",
    "jobs",
    "docs",
    "redoc",
    "openapi.json",
}


def operation_id(route: APIRoute) -> str:
    """`tag-name` operation ids, so the generated client reads `authLogin`, `historyList...`."""
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


def _spa_middleware(
    spa_dir: Path,
) -> Callable[[Request, Callable[..., Awaitable[Response]]], Awaitable[Response]]:
    index = spa_dir / "index.html"
    # index.html answers many URLs that also name API resources: it must never be reused from a
    # cache for a data request to the same address.
    index_headers = {"Cache-Control": "no-cache", "Vary": "Accept, Authorization, X-API-Key"}

    def app_page() -> Response:
        return FileResponse(index, headers=index_headers)

    async def middleware(
        request: Request, call_next: Callable[..., Awaitable[Response]]
    ) -> Response:
        if request.method in ("GET", "HEAD") and index.is_file():
            path = request.url.path
            first = path.strip("/").split("/", 1)[0]
            accepts_html = "text/html" in request.headers.get("accept", "")
            authed = "authorization" in request.headers or "x-api-key" in request.headers
            if first and first not in API_PREFIXES:
                asset = (spa_dir / path.lstrip("/")).resolve()
                if asset.is_file() and spa_dir.resolve() in asset.parents:
                    return FileResponse(asset)
                if accepts_html:
                    return app_page()
            elif not first:
                return app_page()
            elif accepts_html and not authed and first in ("history", "models", "analyses"):
                # A browser navigating to a client-side route that shares a prefix with the API
                # (/history/123) gets the app; API calls send credentials and JSON accept headers.
                return app_page()
        return await call_next(request)

    return middleware


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Start-up (lifespan) migrates the database, loads and warms the models."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await start_runtime(settings)
        app.state.runtime = runtime
        log.info(
            "spondyscan ready at %s (start-up %.1fs)",
            settings.base_url,
            runtime.timings.get("startup_s", 0.0),
        )
        try:
            yield
        finally:
            app.state.runtime = None
            await runtime.close()

    app = FastAPI(
        title="spondyscan",
        version=_version(),
        summary="Explainable AS research on spine MRI: segmentation, classification, heatmaps.",
        description=(
            f"**{RESEARCH_NOTICE}**\n\n"
            "Authenticate with a bearer token from `POST /auth/token` or an `X-API-Key` header. "
            "Errors are JSON `{code, message}`."
        ),
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = None
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    for module in (auth, inference, history, artifacts, models, jobs, health):
        app.include_router(module.router)
    spa_dir = Path(settings.spa_dir)
    if (spa_dir / "index.html").is_file():
        app.middleware("http")(_spa_middleware(spa_dir))

    @app.get("/", include_in_schema=False, response_model=None)
    async def root() -> Response:
        """The web app when built, else a pointer to the API docs."""
        from fastapi.responses import JSONResponse

        return JSONResponse(
            error_body("no_web_app", "The web app is not built; the API docs are at /docs."),
            status_code=404,
        )

    return app
