"""Housekeeping after crashes: what a killed process leaves behind is found and removed.

* cancelled jobs whose last items were held by workers that died are closed once the leases
  lapse, and their inputs removed; so are jobs whose process stopped between finishing their
  last item and closing them;
* the uploaded series of finished studies are removed once their retention period is over
  (``study_input_retention_seconds``; with 0 they go as the study finishes);
* result folders without a database row (a process killed between renaming a result's folder
  into place and committing its row) are removed once they are older than a grace period,
  since a live request completes that gap in milliseconds.

The API runs them at start-up and once per job lease period (``backend.worker.executors``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.config import Settings
from backend.repositories import analyses as analyses_repo
from backend.repositories import jobs as jobs_repo
from backend.runtime import Runtime
from backend.services.job_intake import job_inputs
from backend.services.jobs import finalize_job

log = logging.getLogger(__name__)


async def reap_cancelled_jobs(runtime: Runtime) -> int:
    """Close cancelled jobs whose last items were held by workers that died (cancel those items
    once their leases lapse), and jobs left open with no open item; remove their inputs.
    Returns jobs closed."""
    closed = 0
    async with runtime.sessionmaker() as session:
        for job_id in await jobs_repo.cancelled_unfinished_jobs(session):
            await jobs_repo.cancel_open(session, job_id, await jobs_repo.database_now(session))
            await session.commit()
            closed += int(await finalize_job(session, job_inputs(runtime.settings), job_id))
        for job_id in await jobs_repo.idle_unfinished_jobs(session):
            closed += int(await finalize_job(session, job_inputs(runtime.settings), job_id))
    return closed


async def remove_orphan_results(runtime: Runtime) -> int:
    """Delete result folders that have no analysis row and are older than the grace period."""
    cutoff = time.time() - runtime.settings.orphan_grace_seconds
    folders = await asyncio.to_thread(runtime.store.analysis_ids)
    old = [analysis_id for analysis_id, mtime in folders if mtime < cutoff]
    if not old:
        return 0
    async with runtime.sessionmaker() as session:
        known = await analyses_repo.existing_ids(session, old)
    orphans = [analysis_id for analysis_id in old if analysis_id not in known]
    for analysis_id in orphans:
        await asyncio.to_thread(runtime.store.delete, analysis_id)
    if orphans:
        log.warning("removed %d result folders that had no database row", len(orphans))
    return len(orphans)


async def expire_study_inputs(
    session: AsyncSession, settings: Settings, now: datetime | None = None
) -> int:
    """Remove the series of studies that finished more than the retention period ago."""
    store = job_inputs(settings)
    stored = await asyncio.to_thread(store.job_ids)
    if not stored:
        return 0
    now = now or await jobs_repo.database_now(session)
    cutoff = now - timedelta(seconds=settings.study_input_retention_seconds)
    expired = await jobs_repo.finished_before(session, stored, cutoff)
    for job_id in expired:
        await asyncio.to_thread(store.delete, job_id)
    if expired:
        log.info("removed the stored series of %d finished studies", len(expired))
    return len(expired)


async def housekeeping(runtime: Runtime) -> tuple[int, int]:
    """Every pass; returns (jobs closed, orphan folders removed)."""
    async with runtime.sessionmaker() as session:
        await expire_study_inputs(session, runtime.settings)
    return await reap_cancelled_jobs(runtime), await remove_orphan_results(runtime)
