"""Liveness and readiness probes (no credentials needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from backend.schemas.health import Liveness, Readiness
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
