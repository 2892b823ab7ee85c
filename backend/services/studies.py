"""Study use cases: submit a series, follow it, read its result and 3D mask, cancel, delete.

``POST /studies`` checks the upload synchronously (:mod:`backend.services.study_intake`) and
answers 202 with the study id; the analysis runs as the one item of a job of kind ``study`` on
the job executor (:mod:`backend.services.study_processing`). Someone else's study is reported as
not found (never 403), like analyses.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import AppError, NotFound, TooManyRequests
from backend.db.base import utcnow
from backend.models import Job, JobItem, Study
from backend.models.job import ITEM_QUEUED
from backend.models.study import STUDY_CANCELLED, STUDY_DONE, STUDY_QUEUED, STUDY_TERMINAL
from backend.repositories import analyses as analyses_repo
from backend.repositories import audit
from backend.repositories import jobs as jobs_repo
from backend.repositories import studies as studies_repo
from backend.runtime import Runtime
from backend.schemas.jobs import ItemError
from backend.schemas.results import StudyResult
from backend.schemas.studies import (
    PushState,
    StudyFilter,
    StudyOptions,
    StudyPage,
    StudyProgress,
    StudyPublic,
    StudySummary,
)
from backend.services import jobs as jobs_service
from backend.services.analysis import with_resolved_models
from backend.services.atomic import files_then_rows
from backend.services.auth import Principal
from backend.services.job_intake import IncomingFile, job_inputs
from backend.services.jobs import JobExecutor, item_analysis_id
from backend.services.result_store import check_quota
from backend.services.study_intake import StagedStudy, stage_study
from backend.storage.artifacts import ArtifactStore

log = logging.getLogger(__name__)


def deid_key(runtime: Runtime) -> bytes | None:
    """The pseudonym key of de-identification, when the deployment de-identifies."""
    if not runtime.settings.deidentify:
        return None
    secret = runtime.settings.secret_key.get_secret_value().encode()
    return hashlib.sha256(b"spondyscan-deid:" + secret).digest()


def _options(runtime: Runtime, request: StudyOptions) -> StudyOptions:
    """The request's options with model keys resolved (defaults made explicit)."""
    resolved = with_resolved_models(runtime, request)
    settings = runtime.settings
    push = request.push or (settings.dicomweb_push and settings.dicomweb_url is not None)
    if push and not settings.dicomweb_url:
        raise AppError(
            "push=true needs a DICOMweb server: set SPONDYSCAN_DICOMWEB_URL.",
            code="dicomweb_not_configured",
            status_code=409,
        )
    return resolved.model_copy(update={"push": push})


# ----------------------------------------------------------------------------- public shapes


def _progress(study: Study) -> StudyProgress:
    total = study.slices_total
    done = total if study.status == STUDY_DONE else min(study.slices_done, total)
    return StudyProgress(
        phase=study.phase,
        slices_done=done,
        slices_total=total,
        percent=round(100.0 * done / total, 1) if total else 0.0,
    )


def _summary_fields(study: Study) -> dict:
    return {
        "id": study.id,
        "status": study.status,
        "created_at": study.created_at,
        "started_at": study.started_at,
        "finished_at": study.finished_at,
        "progress": _progress(study),
        "slices": study.slices_total,
        "format": (study.input_summary or {}).get("format"),
        "as_status": study.as_status,
        "as_confidence": study.as_confidence,
        "stage": study.stage,
        "stage_confidence": study.stage_confidence,
        "in_domain": study.in_domain,
        "models": list((study.options or {}).get("models") or []),
        "url": f"/studies/{study.id}",
    }


async def _public(session: AsyncSession, study: Study) -> StudyPublic:
    result = None
    if study.status == STUDY_DONE:
        row = await analyses_repo.get_analysis(session, study.id)
        if row is not None:
            result = StudyResult.model_validate(row.result)
    return StudyPublic(
        **_summary_fields(study),
        options=StudyOptions(**study.options),
        input=dict(study.input_summary or {}),
        error=ItemError(code=study.error_code, message=study.error_message or "")
        if study.error_code
        else None,
        job_id=study.job_id,
        mask_url=f"/studies/{study.id}/mask.nii.gz" if result is not None else None,
        push=PushState(**study.push) if study.push else None,
        result=result,
    )


# ----------------------------------------------------------------------------- create


async def create_study(
    session: AsyncSession,
    runtime: Runtime,
    executor: JobExecutor,
    principal: Principal,
    files: list[IncomingFile],
    options: StudyOptions,
) -> StudyPublic:
    """Check and store the series, record the study and its job, queue it; returns at once."""
    return (await submit_study(session, runtime, executor, principal, files, options))[0]


async def submit_study(
    session: AsyncSession,
    runtime: Runtime,
    executor: JobExecutor,
    principal: Principal,
    files: list[IncomingFile],
    options: StudyOptions,
    *,
    content_key: str | None = None,
    refusals: Callable[[StagedStudy], dict[str, int]] | None = None,
) -> tuple[StudyPublic, StagedStudy]:
    """:func:`create_study`, also returning what the intake kept (STOW-RS reports it).

    ``content_key`` and ``refusals`` (what the intake did not keep, from the staged study) are
    recorded on the row in the same transaction, so a repeated STOW-RS finds the study.
    """
    resolved = _options(runtime, options)
    limit = runtime.settings.max_open_jobs
    if await jobs_repo.open_jobs_of(session, principal.user_id) >= limit:
        raise TooManyRequests(
            f"You have {limit} jobs or studies that are not finished; wait for one or cancel it.",
            code="too_many_jobs",
            retry_after=10,
        )
    job_id = uuid.uuid4()
    study_id = item_analysis_id(job_id, 0)
    store = job_inputs(runtime.settings)
    staged = store.stage(job_id)
    now = utcnow()
    async with files_then_rows(session, staged):
        study_in: StagedStudy = await runtime.guards.decoding.run(
            stage_study, staged, files, runtime.settings, deid_key=deid_key(runtime)
        )
        await check_quota(session, runtime.settings, principal, study_in.kept_bytes)
        await asyncio.to_thread(staged.commit)
        job = Job(
            id=job_id,
            user_id=principal.user_id,
            api_key_id=principal.api_key_id,
            kind="study",
            status="queued",
            backend=executor.name,
            options=resolved.model_dump(mode="json"),
            total=1,
            created_at=now,
        )
        item = JobItem(
            index=0,
            filename=None,
            input_name=None,
            input_sha256=None,
            size_bytes=study_in.kept_bytes,
            status=ITEM_QUEUED,
            attempts=0,
        )
        await jobs_repo.add_job(session, job, [item])
        await studies_repo.add_study(
            session,
            Study(
                id=study_id,
                user_id=principal.user_id,
                job_id=job_id,
                status=STUDY_QUEUED,
                slices_done=0,
                slices_total=study_in.slices,
                created_at=now,
                input_summary=study_in.summary,
                source=study_in.source,
                options=resolved.model_dump(mode="json"),
                push={"status": "pending", "server": runtime.settings.dicomweb_url}
                if resolved.push
                else None,
                content_key=content_key,
                refused_instances=refusals(study_in) if refusals is not None else None,
            ),
        )
        await audit.record(
            session,
            action="study.create",
            actor=principal.actor,
            user_id=principal.user_id,
            target=str(study_id),
            detail={
                "format": study_in.format,
                "slices": study_in.slices,
                "files": len(study_in.files),
                "models": resolved.models,
                "job_id": str(job_id),
            },
        )
    try:
        await executor.submit(job_id, [0])
    except Exception as exc:
        log.exception("could not enqueue study %s", study_id)
        await _remove(session, runtime, study_id, job_id)
        raise AppError(
            "The job queue is not reachable; retry in a moment.",
            code="queue_unavailable",
            status_code=503,
            headers={"Retry-After": "5"},
        ) from exc
    return await get_study(session, principal, study_id), study_in


async def _remove(
    session: AsyncSession, runtime: Runtime, study_id: uuid.UUID, job_id: uuid.UUID
) -> None:
    study = await studies_repo.get_study(session, study_id)
    if study is not None:
        await studies_repo.delete_study(session, study)
    job = await jobs_repo.get_job(session, job_id)
    if job is not None:
        await jobs_repo.delete_job(session, job)
    await session.commit()
    await asyncio.to_thread(job_inputs(runtime.settings).delete, job_id)


# ----------------------------------------------------------------------------- read


async def _owned(session: AsyncSession, principal: Principal, study_id: uuid.UUID) -> Study:
    study = await studies_repo.get_study_for(
        session, study_id, principal.user_id, admin=principal.is_admin
    )
    if study is None:
        raise NotFound("No such study.", code="study_not_found")
    await session.refresh(study)  # workers change it behind this session's back
    return study


async def get_study(
    session: AsyncSession, principal: Principal, study_id: uuid.UUID
) -> StudyPublic:
    """Status, progress, input and (once done) the full result."""
    return await _public(session, await _owned(session, principal, study_id))


async def list_studies(
    session: AsyncSession, principal: Principal, filters: StudyFilter
) -> StudyPage:
    rows, total = await studies_repo.list_studies(session, principal.user_id, filters)
    return StudyPage(
        items=[StudySummary(**_summary_fields(r)) for r in rows],
        total=total,
        limit=filters.limit,
        offset=filters.offset,
    )


async def mask_file(
    session: AsyncSession, store: ArtifactStore, principal: Principal, study_id: uuid.UUID
) -> Path:
    """The 3D mask of a finished study (owner or admin only)."""
    study = await _owned(session, principal, study_id)
    path = store.path(study_id, "mask.nii.gz") if study.status == STUDY_DONE else None
    if path is None:
        raise NotFound("The study has no mask (yet): it is not done.", code="mask_not_ready")
    return path


# ----------------------------------------------------------------------------- cancel, delete


async def cancel_study(
    session: AsyncSession, runtime: Runtime, principal: Principal, study_id: uuid.UUID
) -> StudyPublic:
    """Stop a study: one not started is cancelled at once, a running one at its next step."""
    study = await _owned(session, principal, study_id)
    if study.status not in STUDY_TERMINAL and study.job_id is not None:
        job_id = study.job_id
        await jobs_service.cancel_job(session, runtime, principal, job_id)
        item = await jobs_repo.get_item(session, job_id, 0)
        if item is not None and item.status == "cancelled":
            # Not started (or its worker died): nothing will record the end, so do it here.
            now = await jobs_repo.database_now(session)
            await studies_repo.finish(session, study_id, STUDY_CANCELLED, now)
            await session.commit()
    return await get_study(session, principal, study_id)


async def delete_study(
    session: AsyncSession, runtime: Runtime, principal: Principal, study_id: uuid.UUID
) -> None:
    """Delete the study, its result and files (a running one is cancelled first)."""
    study = await _owned(session, principal, study_id)
    job_id = study.job_id
    if study.status not in STUDY_TERMINAL and job_id is not None:
        await jobs_service.cancel_job(session, runtime, principal, job_id)
    store = runtime.store
    trashed = await asyncio.to_thread(store.move_to_trash, study_id)
    try:
        row = await analyses_repo.get_analysis(session, study_id)
        if row is not None:
            await analyses_repo.delete_analysis(session, row)
        await studies_repo.delete_study(session, study)
        await audit.record(
            session,
            action="study.delete",
            actor=principal.actor,
            user_id=principal.user_id,
            target=str(study_id),
            detail={"owner": str(study.user_id)},
        )
        await session.commit()
    except BaseException:
        await session.rollback()
        await asyncio.to_thread(store.restore, study_id, trashed)
        raise
    await asyncio.to_thread(store.purge, trashed)
