"""Liveness and readiness probes (no credentials needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from backend.api.deps import SettingsDep
from backend.schemas.common import error_responses
from backend.schemas.health import Limits, Liveness, Readiness
from backend.services import health as health_service

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Liveness)
async def live() -> Liveness:
    """The process is up and answering."""
    return Liveness()


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(request: Request, response: Response) -> Readiness:
    """Models loaded and database reachable (503 until both hold)."""
    result = await health_service.readiness(getattr(request.app.state, "runtime", None))
    if result.status != "ready":
        response.status_code = 503
    return result


@router.get("/limits", response_model=Limits, responses=error_responses(503))
async def limits(settings: SettingsDep) -> Limits:
    """What this server accepts: upload sizes, pixels, frames, models per request, job sizes."""
    return health_service.limits(settings)
