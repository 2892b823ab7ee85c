"""Your stored results: list, read, delete."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from backend.api.deps import CurrentUser, RuntimeDep, SessionDep
from backend.schemas.common import error_responses
from backend.schemas.results import AnyResult, HistoryFilter, HistoryPage
from backend.services import history as history_service

router = APIRouter(prefix="/history", tags=["history"])


@router.get("", response_model=HistoryPage, responses=error_responses(401, 422))
async def list_history(
    filters: Annotated[HistoryFilter, Query()], principal: CurrentUser, session: SessionDep
) -> HistoryPage:
    """Your results, newest first; filter by date range, AS status, stage, model or kind."""
    return await history_service.list_history(session, principal, filters)


@router.get("/{analysis_id}", response_model=AnyResult, responses=error_responses(401, 404))
async def read_history_entry(
    analysis_id: uuid.UUID, principal: CurrentUser, session: SessionDep
) -> AnyResult:
    """One stored result, exactly as it was returned when it was made."""
    return await history_service.get_history_entry(session, principal, analysis_id)


@router.delete(
    "/{analysis_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 404),
)
async def delete_history_entry(
    analysis_id: uuid.UUID, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Delete one of your results and its images."""
    await history_service.delete_history_entry(session, runtime.store, principal, analysis_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
