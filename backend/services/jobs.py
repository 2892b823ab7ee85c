"""Batch-job use cases: create, read, list and cancel a job.

A job is a set of uploaded files analysed with the same options. Its files are stored in the
job input store (atomically, before any row exists), its rows are committed, and only then is
each item handed to the job executor (``backend.worker.executors``: asyncio tasks in the API
process, or Celery workers). Either way an item runs through
:func:`backend.services.job_processing.process_item`; results are exported by
:mod:`backend.services.job_export`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import AppError, BadInput, NotFound, TooManyRequests
from backend.db.base import utcnow
from backend.models import Job, JobItem
from backend.models.job import (
    ITEM_CANCELLED,
    ITEM_DONE,
    ITEM_FAILED,
    ITEM_QUEUED,
    ITEM_RUNNING,
)
from backend.repositories import audit
from backend.repositories import jobs as jobs_repo
from backend.runtime import Runtime
from backend.schemas.jobs import (
    ItemError,
    JobItemPublic,
    JobOptions,
    JobPage,
    JobProgress,
    JobPublic,
    JobSummary,
)
from backend.services.analysis import with_resolved_models
from backend.services.atomic import files_then_rows
from backend.services.auth import Principal
from backend.services.job_intake import IncomingFile, StagedItem, job_inputs, stage_files
from backend.services.result_store import check_quota
from backend.storage.job_inputs import JobInputStore

log = logging.getLogger(__name__)

# Analysis ids of job items are uuid5(ITEM_NAMESPACE, "<job id>/<index>").
ITEM_NAMESPACE = uuid.UUID("6d1f3c8e-5b0a-4f5e-9a57-3d1c2b7e9f10")


def item_analysis_id(job_id: uuid.UUID, index: int) -> uuid.UUID:
    """The id the analysis of item ``index`` of ``job_id`` gets, on every attempt."""
    return uuid.uuid5(ITEM_NAMESPACE, f"{job_id}/{index}")


class JobExecutor(Protocol):
    """Where items run: in the API process (embedded) or on Celery workers."""

    name: str

    async def submit(self, job_id: uuid.UUID, indexes: list[int]) -> None:
        """Hand these items of a committed job to the workers."""


# ----------------------------------------------------------------------------- public shapes


def _progress(total: int, counts: dict[str, int]) -> JobProgress:
    done, failed, cancelled = (counts.get(s, 0) for s in (ITEM_DONE, ITEM_FAILED, ITEM_CANCELLED))
    finished = done + failed + cancelled
    return JobProgress(
        total=total,
        done=done,
        failed=failed,
        cancelled=cancelled,
        queued=counts.get(ITEM_QUEUED, 0),
        running=counts.get(ITEM_RUNNING, 0),
        finished=finished,
        percent=round(100.0 * finished / total, 1) if total else 100.0,
    )


def job_status(job: Job, counts: dict[str, int]) -> str:
    """The job's state from its items (the stored column can lag a moment behind).

    "completed" once the job is closed (``finished_at``), which happens after its inputs are
    removed; between its last item and that moment it still reads "running" (100 %).
    """
    if job.cancelled_at is not None:
        return "cancelled"
    open_items = counts.get(ITEM_QUEUED, 0) + counts.get(ITEM_RUNNING, 0)
    if open_items == 0 and job.finished_at is not None:
        return "completed"
    started = sum(counts.get(s, 0) for s in (ITEM_RUNNING, ITEM_DONE, ITEM_FAILED))
    return "running" if started or open_items == 0 else "queued"


def _summary(job: Job, counts: dict[str, int]) -> JobSummary:
    return JobSummary(
        id=job.id,
        kind=job.kind,  # type: ignore[arg-type]
        study_id=item_analysis_id(job.id, 0) if job.kind == "study" else None,
        status=job_status(job, counts),  # type: ignore[arg-type]
        backend=job.backend,  # type: ignore[arg-type]
        options=JobOptions(**job.options),
        progress=_progress(job.total, counts),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        cancelled_at=job.cancelled_at,
        results_csv_url=f"/jobs/{job.id}/results.csv",
        results_json_url=f"/jobs/{job.id}/results.json",
    )


def _item_public(item: JobItem) -> JobItemPublic:
    return JobItemPublic(
        index=item.index,
        filename=item.filename,
        input_sha256=item.input_sha256,
        size_bytes=item.size_bytes,
        status=item.status,  # type: ignore[arg-type]
        attempts=item.attempts,
        error=ItemError(code=item.error_code, message=item.error_message or "")
        if item.error_code
        else None,
        analysis_id=item.analysis_id,
        result_url=f"/history/{item.analysis_id}" if item.analysis_id else None,
        result=item.summary,
        started_at=item.started_at,
        finished_at=item.finished_at,
    )


# ----------------------------------------------------------------------------- create


def _rows(job: Job, staged: list[StagedItem]) -> list[JobItem]:
    now = job.created_at
    return [
        JobItem(
            index=s.index,
            filename=s.filename,
            input_name=s.input_name if s.error is None else None,
            input_sha256=s.sha256,
            size_bytes=s.size,
            status=ITEM_FAILED if s.error else ITEM_QUEUED,
            attempts=0,
            error_code=s.error[0] if s.error else None,
            error_message=s.error[1] if s.error else None,
            finished_at=now if s.error else None,
        )
        for s in staged
    ]


async def _record(
    session: AsyncSession,
    runtime: Runtime,
    job: Job,
    principal: Principal,
    files: list[IncomingFile],
) -> list[JobItem]:
    """Files first (one atomic rename), then the job's rows and audit event in one commit."""
    store = job_inputs(runtime.settings)
    staged = store.stage(job.id)
    async with files_then_rows(session, staged):
        staged_items = await asyncio.to_thread(stage_files, staged, files, runtime.settings)
        kept = sum(s.size for s in staged_items if s.error is None)
        await check_quota(session, runtime.settings, principal, kept)
        await asyncio.to_thread(staged.commit)
        items = _rows(job, staged_items)
        job.total = len(items)
        await jobs_repo.add_job(session, job, items)
        await audit.record(
            session,
            action="job.create",
            actor=principal.actor,
            user_id=principal.user_id,
            target=str(job.id),
            detail={"items": len(items), "backend": job.backend, "models": job.options["models"]},
        )
    return items


async def _enqueue(
    session: AsyncSession, store: JobInputStore, executor: JobExecutor, job: Job, queued: list[int]
) -> None:
    try:
        await executor.submit(job.id, queued)
    except Exception as exc:
        log.exception("could not enqueue job %s", job.id)
        # Nothing of the job may stay behind: rows and files go, the client retries.
        await jobs_repo.delete_job(session, job)
        await session.commit()
        await asyncio.to_thread(store.delete, job.id)
        raise AppError(
            "The job queue is not reachable; retry in a moment.",
            code="queue_unavailable",
            status_code=503,
            headers={"Retry-After": "5"},
        ) from exc


async def create_job(
    session: AsyncSession,
    runtime: Runtime,
    executor: JobExecutor,
    principal: Principal,
    files: list[IncomingFile],
    options: JobOptions,
) -> JobPublic:
    """Store the files, record the job, hand its items to the executor; returns at once."""
    resolved = with_resolved_models(runtime, options)
    limit = runtime.settings.max_open_jobs
    if await jobs_repo.open_jobs_of(session, principal.user_id) >= limit:
        raise TooManyRequests(
            f"You have {limit} jobs that are not finished; wait for one or cancel it.",
            code="too_many_jobs",
            retry_after=10,
        )
    if not files:
        raise BadInput("Upload one or more files (field 'files'), or one zip.", code="no_files")
    job = Job(
        id=uuid.uuid4(),
        user_id=principal.user_id,
        api_key_id=principal.api_key_id,
        status="queued",
        backend=executor.name,
        options=resolved.model_dump(mode="json"),
        total=0,
        created_at=utcnow(),
    )
    items = await _record(session, runtime, job, principal, files)
    store = job_inputs(runtime.settings)
    queued = [i.index for i in items if i.status == ITEM_QUEUED]
    if queued:
        await _enqueue(session, store, executor, job, queued)
    else:
        await finalize_job(session, store, job.id)
    return await get_job(session, principal, job.id)


# ----------------------------------------------------------------------------- read, cancel


async def _owned(session: AsyncSession, principal: Principal, job_id: uuid.UUID) -> Job:
    job = await jobs_repo.get_job_for(session, job_id, principal.user_id, admin=principal.is_admin)
    if job is None:
        raise NotFound("No such job.", code="job_not_found")
    return job


async def get_job(session: AsyncSession, principal: Principal, job_id: uuid.UUID) -> JobPublic:
    """The job with every item's status and result or error (owner or admin only)."""
    job = await _owned(session, principal, job_id)
    # Fresh values: workers change items behind this session's back.
    await session.refresh(job)
    items = await jobs_repo.list_items(session, job_id)
    counts: dict[str, int] = {}
    for item in items:
        counts[item.status] = counts.get(item.status, 0) + 1
    return JobPublic(**_summary(job, counts).model_dump(), items=[_item_public(i) for i in items])


async def list_jobs(
    session: AsyncSession,
    principal: Principal,
    *,
    limit: int = 20,
    offset: int = 0,
    status: str | None = None,
    kind: str | None = None,
) -> JobPage:
    """The caller's own jobs, newest first."""
    rows, total = await jobs_repo.list_jobs(
        session, principal.user_id, limit=limit, offset=offset, status=status, kind=kind
    )
    counts = await jobs_repo.item_counts(session, [j.id for j in rows])
    return JobPage(
        items=[_summary(j, counts[j.id]) for j in rows], total=total, limit=limit, offset=offset
    )


async def finalize_job(session: AsyncSession, store: JobInputStore, job_id: uuid.UUID) -> bool:
    """Close the job when no item is open; its stored inputs are not needed any more."""
    if await jobs_repo.unfinished_count(session, job_id):
        return False
    job = await jobs_repo.get_job(session, job_id)
    if job is None:
        return False
    await session.refresh(job)
    status = "cancelled" if job.cancelled_at is not None else "completed"
    # No item is open, so nothing needs the inputs: they go before the job reads as closed
    # (deleting twice is harmless). A study's series may be kept for a while
    # (settings.study_input_retention_seconds); housekeeping removes it then.
    keep = job.kind == "study" and status == "completed" and store.study_retention_s > 0
    if not keep:
        await asyncio.to_thread(store.delete, job_id)
    won = await jobs_repo.finalize(session, job_id, status, await jobs_repo.database_now(session))
    await session.commit()
    return won


async def cancel_job(
    session: AsyncSession, runtime: Runtime, principal: Principal, job_id: uuid.UUID
) -> JobPublic:
    """Stop the job: items not started, and items whose worker died, are cancelled; items a
    live worker is running finish. The job's inputs go once no item is open."""
    job = await _owned(session, principal, job_id)
    if job.finished_at is None and job.cancelled_at is None:
        now = await jobs_repo.database_now(session)
        job.cancelled_at = now
        job.status = "cancelled"
        n = await jobs_repo.cancel_open(session, job_id, now)
        await audit.record(
            session,
            action="job.cancel",
            actor=principal.actor,
            user_id=principal.user_id,
            target=str(job_id),
            detail={"cancelled_items": n},
        )
        await session.commit()
        await finalize_job(session, job_inputs(runtime.settings), job_id)
    return await get_job(session, principal, job_id)
