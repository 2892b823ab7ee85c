"""Readiness: models loaded and database reachable."""

from __future__ import annotations

from backend.core.config import Settings
from backend.runtime import Runtime
from backend.schemas.auth import MIN_PASSWORD_LENGTH
from backend.schemas.health import InferenceStats, Limits, Readiness


async def readiness(runtime: Runtime | None) -> Readiness:
    """What the readiness probe reports; ``status`` is "ready" only when everything is up."""
    database = await runtime.database_ok() if runtime is not None else False
    registry = runtime.registry if runtime is not None else None
    runner = runtime.runner if runtime is not None else None
    stats = runner.stats() if runner is not None else {}
    ok = database and runtime is not None and runtime.models_ready
    return Readiness(
        status="ready" if ok else "not_ready",
        database=database,
        models_loaded=sum(e.ready for e in registry.models.values()) if registry else 0,
        models=registry.keys() if registry else [],
        loading=registry.loading() if registry else [],
        inference=InferenceStats(
            requests=stats.get("requests", 0),
            model_calls=stats.get("model_calls", 0),
            queued=stats.get("queued", 0),
            rejected=stats.get("rejected", 0),
            intra_op_threads=stats.get("intra_op_threads", 0),
        ),
    )


def limits(settings: Settings) -> Limits:
    """The limits a client should know before it uploads."""
    return Limits(
        max_upload_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        max_frames=settings.max_frames,
        max_models_per_request=settings.max_models_per_request,
        job_max_items=settings.job_max_items,
        job_max_bytes=settings.job_max_bytes,
        min_password_length=MIN_PASSWORD_LENGTH,
    )
