"""The images of a stored result, for their owner only."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import FileResponse

from backend.api.deps import CurrentUser, RuntimeDep, SessionDep
from backend.schemas.common import error_responses
from backend.services import history as history_service
from backend.storage.artifacts import MEDIA_TYPES

router = APIRouter(prefix="/artifacts", tags=["artifacts"])


@router.get(
    "/{analysis_id}/{name}",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/png": {}}, "description": "the image"},
        **error_responses(401, 404),
    },
)
async def read_artifact(
    analysis_id: uuid.UUID,
    name: str,
    principal: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
) -> FileResponse:
    """One image of a result (input slice, mask, heatmap, overlay); owners and admins only."""
    path = await history_service.artifact_file(session, runtime.store, principal, analysis_id, name)
    return FileResponse(
        path,
        media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=3600"},
    )
