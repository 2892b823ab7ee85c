"""DICOMweb in: STOW-RS, so a PACS or router can push a series for analysis."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from backend.api.deps import CurrentUser, RuntimeDep, SessionDep
from backend.api.routes.jobs import ExecutorDep
from backend.schemas.common import error_responses
from backend.services import dicomweb as dicomweb_service

# Body limits come from the settings when the app includes this router (main.py).
router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])


@router.post(
    "/studies",
    response_class=JSONResponse,
    responses={
        200: {"content": {"application/dicom+json": {}}, "description": "every instance stored"},
        202: {"content": {"application/dicom+json": {}}, "description": "some failed"},
        **error_responses(400, 401, 413, 415, 422, 429, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                'multipart/related; type="application/dicom"': {
                    "schema": {"type": "string", "format": "binary"}
                }
            },
        }
    },
)
async def stow_studies(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    principal: CurrentUser,
    executor: ExecutorDep,
) -> JSONResponse:
    """STOW-RS: store a series' instances and analyse them as a study (Location: the study)."""
    body = await request.body()
    response, study, status = await dicomweb_service.stow_in(
        session,
        runtime,
        executor,
        principal,
        request.headers.get("content-type", ""),
        body,
    )
    return JSONResponse(
        response,
        status_code=status,
        media_type="application/dicom+json",
        headers={"Location": study.url, "X-Spondyscan-Study-Id": str(study.id)},
    )
