"""Batch jobs: submit many files (or one zip), follow progress, cancel, export the results."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile, status

from backend.api.deps import CurrentUser, RuntimeDep, SessionDep
from backend.core.errors import NotReady
from backend.schemas.common import error_responses
from backend.schemas.jobs import (
    CamMethod,
    JobKind,
    JobOptions,
    JobPage,
    JobPublic,
    JobResults,
    JobStatus,
)
from backend.schemas.results import MAX_OFFSET
from backend.services import job_export
from backend.services import jobs as jobs_service
from backend.services.job_intake import IncomingFile
from backend.services.jobs import JobExecutor

# Body and form limits come from the settings when the app includes this router (main.py).
router = APIRouter(prefix="/jobs", tags=["jobs"])


def get_executor(request: Request) -> JobExecutor:
    executor: JobExecutor | None = getattr(request.app.state, "job_executor", None)
    if executor is None:
        raise NotReady("The job service is starting; retry in a moment.")
    return executor


ExecutorDep = Annotated[JobExecutor, Depends(get_executor)]
Models = Annotated[
    list[str] | None,
    Form(description="classifier keys (repeat the field); default: the registry default"),
]


@router.post(
    "",
    response_model=JobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(400, 401, 413, 422, 503),
)
async def create_job(
    runtime: RuntimeDep,
    session: SessionDep,
    principal: CurrentUser,
    executor: ExecutorDep,
    response: Response,
    files: Annotated[
        list[UploadFile],
        File(
            description="the images (repeat the field), or a single zip of images",
            min_length=1,
            json_schema_extra={"items": {"type": "string", "format": "binary", "minLength": 1}},
        ),
    ],
    models: Models = None,
    segmentation_model: Annotated[str | None, Form()] = None,
    explain: Annotated[bool, Form(description="add a heatmap per classifier")] = True,
    method: Annotated[
        CamMethod | None,
        Form(
            description="heatmap method; default: each model's measured best method (GET "
            "/models: default_method). attention: rollout, hybrid v3 models only"
        ),
    ] = None,
    faithfulness: Annotated[bool, Form()] = True,
    allow_out_of_domain: Annotated[
        bool,
        Form(description="show classifier outputs even for images unlike the training slices"),
    ] = False,
) -> JobPublic:
    """Queue a batch analysis of many images; returns the job id at once (202)."""
    options = JobOptions(
        models=models or [],
        segmentation_model=segmentation_model,
        explain=explain,
        method=method,
        faithfulness=faithfulness,
        allow_out_of_domain=allow_out_of_domain,
    )
    incoming = [IncomingFile(f.filename, f.file) for f in files]
    job = await jobs_service.create_job(session, runtime, executor, principal, incoming, options)
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


@router.get("", response_model=JobPage, responses=error_responses(401, 422))
async def list_jobs(
    session: SessionDep,
    principal: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
) -> JobPage:
    """Your jobs (batches and studies), newest first, with their progress."""
    return await jobs_service.list_jobs(
        session, principal, limit=limit, offset=offset, status=status, kind=kind
    )


@router.get("/{job_id}", response_model=JobPublic, responses=error_responses(401, 404))
async def read_job(job_id: uuid.UUID, session: SessionDep, principal: CurrentUser) -> JobPublic:
    """A job's status, progress and every item's result or error code."""
    return await jobs_service.get_job(session, principal, job_id)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=error_responses(401, 404))
async def cancel_job(
    job_id: uuid.UUID, session: SessionDep, principal: CurrentUser, runtime: RuntimeDep
) -> JobPublic:
    """Cancel the items not started yet; items already running finish."""
    return await jobs_service.cancel_job(session, runtime, principal, job_id)


@router.get(
    "/{job_id}/results.csv",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "one row per item"},
        **error_responses(401, 404),
    },
)
async def job_results_csv(
    job_id: uuid.UUID, session: SessionDep, principal: CurrentUser
) -> Response:
    """The results as CSV: one row per item, per-model AS status and stage, error codes."""
    body = await job_export.results_csv(session, principal, job_id)
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="spondyscan-job-{job_id}.csv"'},
    )


@router.get(
    "/{job_id}/results.json", response_model=JobResults, responses=error_responses(401, 404)
)
async def job_results_json(
    job_id: uuid.UUID, session: SessionDep, principal: CurrentUser
) -> JobResults:
    """The results as JSON: each item's full stored analysis, or its error."""
    return await job_export.results_json(session, principal, job_id)
