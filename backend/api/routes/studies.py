"""Whole series: submit a DICOM series, a zip of one or a NIfTI volume; follow, read, delete."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.responses import FileResponse

from backend.api.deps import CurrentUser, RuntimeDep, SessionDep
from backend.api.routes.inference import AllowOutOfDomain, Method, Models
from backend.api.routes.jobs import ExecutorDep
from backend.schemas.common import error_responses
from backend.schemas.studies import (
    PullRequest,
    StudyFilter,
    StudyOptions,
    StudyPage,
    StudyPublic,
)
from backend.services import dicomweb as dicomweb_service
from backend.services import studies as studies_service
from backend.services.job_intake import IncomingFile

# Body and form limits come from the settings when the app includes this router (main.py).
router = APIRouter(prefix="/studies", tags=["studies"])


@router.post(
    "",
    response_model=StudyPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(400, 401, 409, 413, 422, 429, 503),
)
async def create_study(
    runtime: RuntimeDep,
    session: SessionDep,
    principal: CurrentUser,
    executor: ExecutorDep,
    response: Response,
    files: Annotated[
        list[UploadFile],
        File(
            description="the DICOM instances of a series (repeat the field), one zip of them, "
            "or one NIfTI volume (.nii or .nii.gz)",
            min_length=1,
            json_schema_extra={"items": {"type": "string", "format": "binary", "minLength": 1}},
        ),
    ],
    models: Models = None,
    segmentation_model: Annotated[str | None, Form()] = None,
    explain: Annotated[bool, Form(description="heatmaps for the key slices")] = True,
    method: Method = None,
    allow_out_of_domain: AllowOutOfDomain = False,
    push: Annotated[
        bool,
        Form(description="STOW-RS the SEG/SR/maps to the configured DICOMweb server when done"),
    ] = False,
) -> StudyPublic:
    """Check the series' headers, store it and queue its analysis; returns the study at once
    (202). Follow it at ``/studies/{id}``: status, progress, then the result."""
    options = StudyOptions(
        models=models or [],
        segmentation_model=segmentation_model,
        explain=explain,
        method=method,
        allow_out_of_domain=allow_out_of_domain,
        push=push,
    )
    incoming = [IncomingFile(f.filename, f.file) for f in files]
    study = await studies_service.create_study(
        session, runtime, executor, principal, incoming, options
    )
    response.headers["Location"] = study.url
    return study


@router.post(
    "/pull",
    response_model=StudyPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(401, 404, 409, 413, 422, 429, 502, 503),
)
async def pull_study(
    body: PullRequest,
    runtime: RuntimeDep,
    session: SessionDep,
    principal: CurrentUser,
    executor: ExecutorDep,
    response: Response,
) -> StudyPublic:
    """Fetch a study's sagittal series from the configured DICOMweb server (QIDO-RS, WADO-RS)
    and analyse it; with push, its SEG/SR/maps go back by STOW-RS once done."""
    study = await dicomweb_service.pull(session, runtime, executor, principal, body)
    response.headers["Location"] = study.url
    return study


@router.get("", response_model=StudyPage, responses=error_responses(401, 422))
async def list_studies(
    filters: Annotated[StudyFilter, Query()], principal: CurrentUser, session: SessionDep
) -> StudyPage:
    """Your studies, newest first; filter by date range, AS status, stage, model or status."""
    return await studies_service.list_studies(session, principal, filters)


@router.get("/{study_id:uuid}", response_model=StudyPublic, responses=error_responses(401, 404))
async def read_study(
    study_id: uuid.UUID, principal: CurrentUser, session: SessionDep
) -> StudyPublic:
    """Status and progress; once done, every slice's result, the aggregate and the domain."""
    return await studies_service.get_study(session, principal, study_id)


@router.post(
    "/{study_id:uuid}/cancel", response_model=StudyPublic, responses=error_responses(401, 404)
)
async def cancel_study(
    study_id: uuid.UUID, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> StudyPublic:
    """Stop a study: at once when it has not started, at its next step when it runs."""
    return await studies_service.cancel_study(session, runtime, principal, study_id)


@router.delete(
    "/{study_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 404),
)
async def delete_study(
    study_id: uuid.UUID, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Delete a study, its result and its files (a running one is cancelled first)."""
    await studies_service.delete_study(session, runtime, principal, study_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{study_id:uuid}/mask.nii.gz",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/gzip": {}}, "description": "the 3D mask (NIfTI-1)"},
        **error_responses(401, 404),
    },
)
async def read_mask(
    study_id: uuid.UUID, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> FileResponse:
    """The 3D mask on the input's grid, with an affine matching the input's geometry."""
    path = await studies_service.mask_file(session, runtime.store, principal, study_id)
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"spondyscan-study-{study_id}-mask.nii.gz",
        headers={"Cache-Control": "private, max-age=3600"},
    )
