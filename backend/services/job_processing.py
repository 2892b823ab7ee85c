"""Worker-side processing of one job item, at most once to completion.

:func:`process_item`

* claims the item with one conditional UPDATE (queued, or running under a lapsed lease), so a
  redelivered task never runs an item another live worker holds;
* renews the lease while it works, so a killed worker's items are taken over once it lapses;
* runs the same use case as ``POST /analyses`` (:func:`backend.services.analysis.run_analysis`)
  with an analysis id derived from (job, index), so at most one analysis can ever exist per item
  however often the broker delivers it; a retry after a crash finds that analysis and stops.

Both executors (``backend.worker.executors``) call it with the process' :class:`Runtime`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import AppError, NotReady, ServiceBusy
from backend.models import Job
from backend.models.job import ITEM_CANCELLED, ITEM_DONE, ITEM_FAILED, ITEM_RUNNING, ITEM_TERMINAL
from backend.models.study import STUDY_CANCELLED, STUDY_FAILED
from backend.repositories import analyses as analyses_repo
from backend.repositories import jobs as jobs_repo
from backend.repositories import users as users_repo
from backend.runtime import Runtime
from backend.schemas.jobs import JobOptions
from backend.schemas.studies import StudyOptions
from backend.services.analysis import AnalysisContext, AnalysisOptions, Upload, run_analysis
from backend.services.auth import Principal
from backend.services.job_intake import job_inputs
from backend.services.jobs import finalize_job, item_analysis_id
from backend.services.study_processing import StudyCancelled, analyse_study, mark_study

log = logging.getLogger(__name__)

# An item whose processing hits an unexpected store error this often is failed, not retried.
MAX_ATTEMPTS = 5


@dataclass
class ItemOutcome:
    """What :func:`process_item` did; ``retry`` asks the executor to try again later."""

    status: str  # done | failed | cancelled | skipped | retry
    retry_in: float = 0.0
    detail: str = ""
    message: str = ""


def summarize_result(result: dict[str, Any]) -> dict[str, Any]:
    """The per-model outcome of a stored analysis, small enough to list for every item."""
    seg = result.get("segmentation")
    return {
        "in_domain": (result.get("domain") or {}).get("in_domain"),
        "withheld": bool(result.get("withheld")),
        "classifications": [
            {
                "model": c["model"]["key"],
                "version": c["model"]["version"],
                "as_status": c["as_status"],
                "as_probability": c["as_probability"],
                "p_positive": (c.get("as_probabilities") or {}).get("positive"),
                "stage": c["stage"],
                "stage_probability": c["stage_probability"],
            }
            for c in result.get("classifications") or []
        ],
        "segmentation": {
            "model": seg["model"]["key"],
            "roi": seg.get("roi"),
            "mask_fraction": seg.get("mask_fraction"),
        }
        if seg
        else None,
        "explanations": [
            {
                "model": e["model"]["key"],
                "class_label": e.get("class_label"),
                "inside_fraction": e.get("inside_fraction"),
                "faithfulness_score": (e.get("faithfulness") or {}).get("score"),
            }
            for e in result.get("explanations") or []
        ],
    }


@dataclass
class _Claimed:
    job_id: uuid.UUID
    index: int
    item_id: int
    attempt: int
    filename: str | None
    input_name: str | None
    options: dict[str, Any]
    principal: Principal
    kind: str = "batch"
    analysis_id: uuid.UUID = field(init=False)

    def __post_init__(self) -> None:
        self.analysis_id = item_analysis_id(self.job_id, self.index)


async def _claim(
    runtime: Runtime, job_id: uuid.UUID, index: int, worker: str
) -> _Claimed | ItemOutcome:
    lease = runtime.settings.job_lease_seconds
    async with runtime.sessionmaker() as session:
        item = await jobs_repo.get_item(session, job_id, index)
        job = await jobs_repo.get_job(session, job_id) if item is not None else None
        if item is None or job is None:
            return ItemOutcome("skipped", detail="no such item (job deleted?)")
        if item.status in ITEM_TERMINAL:
            return ItemOutcome("skipped", detail=f"already {item.status}")
        now = await jobs_repo.database_now(session)
        if job.cancelled_at is not None:
            await jobs_repo.cancel_open(session, job_id, now)
            await session.commit()
            await finalize_job(session, job_inputs(runtime.settings), job_id)
            return ItemOutcome("skipped", detail="job cancelled")
        max_lost = runtime.settings.job_max_attempts
        lost = _LOST.format(lost=max_lost)
        if await jobs_repo.fail_lost_item(session, item.id, worker, now, max_lost, lost):
            await session.commit()
            return await _poisoned(runtime, session, job, index, lost)
        if not await jobs_repo.claim_item(
            session, item.id, worker, now, now + timedelta(seconds=lease), max_lost
        ):
            await session.rollback()
            await session.refresh(item)
            if item.status == ITEM_RUNNING and item.lease_until is not None:
                # Another live worker holds it. Look again once its lease could have lapsed,
                # in case that worker dies before finishing.
                wait = (item.lease_until - now).total_seconds() + 0.5
                return ItemOutcome(
                    "retry",
                    retry_in=max(1.0, min(wait, lease + 1.0)),
                    detail=f"held by {item.worker}",
                )
            return ItemOutcome("skipped", detail=f"already {item.status}")
        await jobs_repo.mark_started(session, job_id, now)
        await session.commit()
        await session.refresh(item)
        user = await users_repo.get_user(session, job.user_id)
        if user is None:
            return ItemOutcome("skipped", detail="owner gone")
        return _Claimed(
            job_id=job_id,
            index=index,
            item_id=item.id,
            attempt=item.attempts,
            filename=item.filename,
            input_name=item.input_name,
            options=dict(job.options),
            principal=Principal(user=user, api_key_id=job.api_key_id),
            kind=job.kind,
        )


_LOST = (
    "This item stopped its worker {lost} times (out of memory or killed) and is not tried again."
)


async def _poisoned(
    runtime: Runtime, session: AsyncSession, job: Job, index: int, message: str
) -> ItemOutcome:
    """An item whose worker died too often was failed without being run again (see
    jobs_repo.fail_lost_item, with ``message``): its study (if it is one) says so, and its
    job is closed if that was the last open item."""
    log.error("job item %s/%s: %s", job.id, index, message)
    if job.kind == "study":
        await mark_study(
            runtime, item_analysis_id(job.id, index), STUDY_FAILED, "worker_lost", message
        )
    await finalize_job(session, job_inputs(runtime.settings), job.id)
    return ItemOutcome(ITEM_FAILED, detail="worker_lost", message=message)


async def _heartbeat(runtime: Runtime, item_id: int, worker: str) -> None:
    lease = runtime.settings.job_lease_seconds
    while True:
        await asyncio.sleep(lease / 3.0)
        try:
            async with runtime.sessionmaker() as session:
                now = await jobs_repo.database_now(session)
                ok = await jobs_repo.renew_lease(
                    session, item_id, worker, now + timedelta(seconds=lease)
                )
                await session.commit()
        except Exception:  # noqa: BLE001 - a missed renewal is retried; the lease is generous
            log.warning("could not renew the lease of job item %s", item_id, exc_info=True)
            continue
        if not ok:
            return


async def _finish(
    runtime: Runtime, c: _Claimed, worker: str, status: str, **values: Any
) -> ItemOutcome:
    async with runtime.sessionmaker() as session:
        now = await jobs_repo.database_now(session)
        mine = await jobs_repo.finish_item(
            session, c.item_id, worker, status=status, now=now, **values
        )
        await session.commit()
    if not mine:
        return ItemOutcome("skipped", detail="lost the claim to another worker")
    return ItemOutcome(
        status, detail=values.get("error_code") or "", message=values.get("error_message") or ""
    )


async def _release(runtime: Runtime, c: _Claimed, worker: str) -> None:
    async with runtime.sessionmaker() as session:
        await jobs_repo.release_item(session, c.item_id, worker)
        await session.commit()


async def _stored_analysis(runtime: Runtime, analysis_id: uuid.UUID) -> dict[str, Any] | None:
    async with runtime.sessionmaker() as session:
        row = await analyses_repo.get_analysis(session, analysis_id)
        return dict(row.result) if row is not None else None


async def _input_of(runtime: Runtime, c: _Claimed) -> bytes | None:
    """The item's uploaded bytes, after clearing what a dead earlier attempt left."""
    if await asyncio.to_thread(runtime.store.exists, c.analysis_id):
        # Files of an attempt that died between writing them and committing its row.
        await asyncio.to_thread(runtime.store.delete, c.analysis_id)
    if not c.input_name:
        return None
    return await asyncio.to_thread(job_inputs(runtime.settings).read, c.job_id, c.input_name)


def _failed(code: str, message: str) -> dict[str, Any]:
    return {"error_code": code, "error_message": message}


async def _store_error(runtime: Runtime, c: _Claimed, worker: str, exc: Exception) -> ItemOutcome:
    """A database or file error while storing: done if a duplicate won, else retry or fail."""
    stored = await _stored_analysis(runtime, c.analysis_id)
    if stored is not None:  # a duplicate delivery raced us and won: same item, done
        return await _finish(
            runtime,
            c,
            worker,
            ITEM_DONE,
            analysis_id=c.analysis_id,
            summary=summarize_result(stored),
        )
    if c.attempt < MAX_ATTEMPTS:
        log.warning("job item %s/%s: store error, will retry: %s", c.job_id, c.index, exc)
        await _release(runtime, c, worker)
        return ItemOutcome("retry", retry_in=2.0 * c.attempt, detail="store_error")
    log.exception("job item %s/%s failed %d times", c.job_id, c.index, c.attempt)
    message = "The item could not be stored; the error has been logged."
    return await _finish(runtime, c, worker, ITEM_FAILED, **_failed("internal_error", message))


async def _execute_study(runtime: Runtime, c: _Claimed, worker: str) -> ItemOutcome:
    """The one item of a study job: the whole series (see services.study_processing)."""
    aid = c.analysis_id
    previous = await _stored_analysis(runtime, aid)
    if previous is not None:
        return await _finish(runtime, c, worker, ITEM_DONE, analysis_id=aid, summary=None)
    folder = job_inputs(runtime.settings).dir_for(c.job_id)
    if not await asyncio.to_thread(folder.is_dir):
        message = "The uploaded series of this study is no longer stored."
        return await _finish(runtime, c, worker, ITEM_FAILED, **_failed("input_missing", message))
    options = StudyOptions(**c.options)
    try:
        result = await analyse_study(runtime, c.principal, aid, c.job_id, folder, options)
    except StudyCancelled:
        await mark_study(runtime, aid, STUDY_CANCELLED, None, None)
        return await _finish(
            runtime, c, worker, ITEM_CANCELLED, **_failed("cancelled", "The study was cancelled.")
        )
    except Exception as exc:  # noqa: BLE001 - every failure ends the attempt one way or another
        return await _failed_attempt(runtime, c, worker, exc, f"study {aid}", "study")
    if options.push:
        from backend.services.dicomweb import push

        await push(runtime, aid)
    summary = {
        "models": [
            {"model": m.model.key, "as_status": m.as_status, "stage": m.stage}
            for m in result.models
        ],
        "slices": len(result.slices),
        "in_domain": result.domain.in_domain,
    }
    return await _finish(runtime, c, worker, ITEM_DONE, analysis_id=aid, summary=summary)


async def _failed_attempt(
    runtime: Runtime, c: _Claimed, worker: str, exc: Exception, where: str, what: str
) -> ItemOutcome:
    """How an attempt that raised ends: a busy or loading server -> released and retried later;
    a refusal -> failed with its code; storage trouble -> :func:`_store_error`; anything else ->
    logged and failed as ``internal_error``."""
    if isinstance(exc, ServiceBusy | NotReady):
        await _release(runtime, c, worker)
        retry = float((exc.headers or {}).get("Retry-After", 2))
        return ItemOutcome("retry", retry_in=retry, detail=exc.code)
    if isinstance(exc, AppError):
        return await _finish(runtime, c, worker, ITEM_FAILED, **_failed(exc.code, exc.message))
    if isinstance(exc, DBAPIError | OSError):
        return await _store_error(runtime, c, worker, exc)
    log.error("%s failed", where, exc_info=exc)
    message = f"The {what} could not be analysed; the error has been logged."
    return await _finish(runtime, c, worker, ITEM_FAILED, **_failed("internal_error", message))


async def _execute(runtime: Runtime, c: _Claimed, worker: str) -> ItemOutcome:
    if c.kind == "study":
        return await _execute_study(runtime, c, worker)
    aid = c.analysis_id
    previous = await _stored_analysis(runtime, aid)
    if previous is not None:
        # An earlier attempt stored the analysis and died before recording it here.
        return await _finish(
            runtime, c, worker, ITEM_DONE, analysis_id=aid, summary=summarize_result(previous)
        )
    data = await _input_of(runtime, c)
    if data is None:
        message = "The uploaded file of this item is no longer stored."
        return await _finish(runtime, c, worker, ITEM_FAILED, **_failed("input_missing", message))
    opts = JobOptions(**c.options)
    options = AnalysisOptions(
        models=list(opts.models) or None,
        segmentation_model=opts.segmentation_model,
        explain=opts.explain,
        method=opts.method,
        faithfulness=opts.faithfulness,
        allow_out_of_domain=opts.allow_out_of_domain,
    )
    async with runtime.sessionmaker() as session:
        ctx = AnalysisContext.from_runtime(runtime, session)
        upload = Upload(data=data, filename=c.filename)
        try:
            result = await run_analysis(
                ctx, c.principal, upload, options, analysis_id=aid, job_id=str(c.job_id)
            )
        except Exception as exc:  # noqa: BLE001 - every failure ends the attempt one way or another
            where = f"job item {c.job_id}/{c.index}"
            return await _failed_attempt(runtime, c, worker, exc, where, "item")
    summary = summarize_result(result.model_dump(mode="json"))
    return await _finish(runtime, c, worker, ITEM_DONE, analysis_id=aid, summary=summary)


async def process_item(runtime: Runtime, job_id: uuid.UUID, index: int, worker: str) -> ItemOutcome:
    """Run one item of a job, at most once to completion however often it is delivered.

    ``runtime`` is the process' :class:`backend.runtime.Runtime` (warm models, store,
    database); ``worker`` names this process for the claim.
    """
    claimed = await _claim(runtime, job_id, index, worker)
    if isinstance(claimed, ItemOutcome):
        return claimed
    beat = asyncio.create_task(_heartbeat(runtime, claimed.item_id, worker))
    try:
        outcome = await _execute(runtime, claimed, worker)
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
    if claimed.kind == "study" and outcome.status == ITEM_FAILED:
        await mark_study(
            runtime, claimed.analysis_id, STUDY_FAILED, outcome.detail, outcome.message
        )
    if outcome.status in (ITEM_DONE, ITEM_FAILED, ITEM_CANCELLED):
        async with runtime.sessionmaker() as session:
            await finalize_job(session, job_inputs(runtime.settings), job_id)
    return outcome
