"""Readiness: models loaded and database reachable."""

from __future__ import annotations

from backend.runtime import Runtime
from backend.schemas.health import InferenceStats, Readiness


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
        models_loaded=len(registry.models) if registry else 0,
        models=registry.keys() if registry else [],
        inference=InferenceStats(
            requests=stats.get("requests", 0),
            model_calls=stats.get("model_calls", 0),
            queued=stats.get("queued", 0),
            rejected=stats.get("rejected", 0),
        ),
    )
