"""The FastAPI application: create_app() wires settings, lifespan, routers, errors and the SPA.

The API owns the root (``/segment``, ``/analyses``, ``/jobs``, ...); the web app lives under
``/app/`` (:mod:`backend.api.spa`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from backend.api.errors import install_error_handlers
from backend.api.middleware import DefaultSecretGuard, SecurityHeaders
from backend.api.routes import (
    artifacts,
    auth,
    dicomweb,
    exports,
    health,
    history,
    inference,
    jobs,
    models,
    studies,
)
from backend.api.spa import install_spa
from backend.core.config import Settings, get_settings
from backend.runtime import start_runtime
from backend.schemas.common import RESEARCH_NOTICE
from backend.worker.executors import running_executor

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
    {"name": "health", "description": "Liveness and readiness probes, and the service's limits."},
]


def operation_id(route: APIRoute) -> str:
    """`tag-name` operation ids, so the generated client reads `authLogin`, `historyList...`."""
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


def _include_routers(app: FastAPI, settings: Settings) -> None:
    """Each router with its body and form limits: the declared length and the streamed bytes
    are checked before anything parses the body or checks credentials (413 ``too_large``)."""
    upload = settings.max_upload_bytes + settings.multipart_overhead_bytes
    # Part headers of every file of a job, beyond the shared overhead.
    job_body = settings.job_max_bytes + settings.multipart_overhead_bytes
    job_body += 1024 * settings.job_max_items
    fields = settings.upload_form_max_fields
    part = settings.upload_form_max_part_bytes
    app.include_router(
        inference.router,
        max_body_size=upload,
        form_limits={"max_files": 1, "max_fields": fields, "max_part_size": part},
    )
    app.include_router(
        jobs.router,
        max_body_size=job_body,
        form_limits={
            # One more than a job may hold, so the job's own check answers with its clearer
            # too_many_items; far more stops the parser (too_many_files) before it spools them.
            "max_files": settings.job_max_items + 1,
            "max_fields": fields,
            "max_part_size": part,
        },
    )
    # The limiter sits inside each route (not around the app) so that SecurityHeaders can turn
    # its plain-text 413 into the API's JSON error.
    study_body = settings.study_max_bytes + settings.multipart_overhead_bytes
    study_body += 1024 * settings.study_max_instances
    # STOW-RS: one multipart/related body of the series' instances.
    app.include_router(dicomweb.router, max_body_size=study_body)
    app.include_router(
        studies.router,
        max_body_size=study_body,
        form_limits={
            "max_files": settings.study_max_instances + 1,
            "max_fields": fields,
            "max_part_size": part,
        },
    )
    small: Any = {
        "max_files": 0,
        "max_fields": settings.form_max_fields,
        "max_part_size": settings.form_max_part_bytes,
    }
    for module in (auth, history, artifacts, models, health, exports):
        app.include_router(
            module.router, max_body_size=settings.max_request_bytes, form_limits=small
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Start-up (lifespan) migrates the database, warms the models, starts jobs."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await start_runtime(settings)
        app.state.runtime = runtime
        try:
            async with running_executor(runtime) as executor:
                app.state.job_executor = executor
                log.info(
                    "spondyscan ready at %s (start-up %.1fs)",
                    settings.base_url,
                    runtime.timings.get("startup_s", 0.0),
                )
                yield
        finally:
            app.state.job_executor = None
            app.state.runtime = None
            await runtime.close()

    app = FastAPI(
        title="spondyscan",
        version=_version(),
        summary="Explainable AS research on spine MRI: segmentation, classification, heatmaps.",
        description=(
            f"**{RESEARCH_NOTICE}**\n\n"
            "Authenticate with a bearer token from `POST /auth/token` or an `X-API-Key` header. "
            "Errors are JSON `{code, message}`. The web app is served under `/app/`."
        ),
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = None
    app.state.job_executor = None
    install_error_handlers(app)
    # Added innermost first: the guard runs inside the headers, so its 503 carries them too.
    app.add_middleware(DefaultSecretGuard, settings=settings)
    app.add_middleware(SecurityHeaders)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    _include_routers(app, settings)
    install_spa(app, Path(settings.spa_dir))
    return app
