"""Job queries. State changes of an item are single conditional UPDATEs, so two workers that
were handed the same item (a broker redelivery) can never both own it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Job, JobItem
from backend.models.job import (
    ITEM_CANCELLED,
    ITEM_DONE,
    ITEM_FAILED,
    ITEM_QUEUED,
    ITEM_RUNNING,
    ITEM_TERMINAL,
)


async def add_job(session: AsyncSession, job: Job, items: list[JobItem]) -> Job:
    job.items = items
    session.add(job)
    await session.flush()
    return job


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    return await session.get(Job, job_id)


async def get_job_for(
    session: AsyncSession, job_id: uuid.UUID, user_id: uuid.UUID, *, admin: bool = False
) -> Job | None:
    """The job if this user may see it (its owner, or an admin); otherwise None."""
    query = select(Job).where(Job.id == job_id)
    if not admin:
        query = query.where(Job.user_id == user_id)
    return await session.scalar(query)


async def list_jobs(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    limit: int,
    offset: int,
    status: str | None,
    kind: str | None = None,
) -> tuple[list[Job], int]:
    where = [Job.user_id == user_id]
    if status is not None:
        where.append(Job.status == status)
    if kind is not None:
        where.append(Job.kind == kind)
    total = await session.scalar(select(func.count(Job.id)).where(*where)) or 0
    rows = await session.scalars(
        select(Job)
        .where(*where)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total)


async def item_counts(
    session: AsyncSession, job_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """Items per status for each job, in one query."""
    ids = list(job_ids)
    out: dict[uuid.UUID, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return out
    rows = await session.execute(
        select(JobItem.job_id, JobItem.status, func.count(JobItem.id))
        .where(JobItem.job_id.in_(ids))
        .group_by(JobItem.job_id, JobItem.status)
    )
    for job_id, status, n in rows:
        out[job_id][status] = int(n)
    return out


async def list_items(session: AsyncSession, job_id: uuid.UUID) -> list[JobItem]:
    """The job's items as the database has them now (workers change them behind the session)."""
    rows = await session.scalars(
        select(JobItem)
        .where(JobItem.job_id == job_id)
        .order_by(JobItem.index)
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def get_item(session: AsyncSession, job_id: uuid.UUID, index: int) -> JobItem | None:
    return await session.scalar(
        select(JobItem).where(JobItem.job_id == job_id, JobItem.index == index)
    )


async def database_now(session: AsyncSession) -> datetime:
    """The database's clock (UTC): every worker compares leases against this one clock."""
    if session.get_bind().dialect.name == "sqlite":
        raw = await session.scalar(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"))
        return datetime.fromisoformat(str(raw)).replace(tzinfo=UTC)
    value = await session.scalar(select(literal_column("clock_timestamp()")))
    assert isinstance(value, datetime)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _lapsed(now: datetime) -> ColumnElement[bool]:
    """Running under a lease that lapsed: its worker died."""
    return and_(
        JobItem.status == ITEM_RUNNING,
        or_(JobItem.lease_until.is_(None), JobItem.lease_until < now),
    )


async def fail_lost_item(
    session: AsyncSession,
    item_id: int,
    worker: str,
    now: datetime,
    max_lost: int,
    message: str,
) -> bool:
    """Fail an item whose lease lapsed for the ``max_lost``-th time, in one step: it is never
    shown as running again, so no further worker is handed it."""
    result = await session.execute(
        update(JobItem)
        .where(JobItem.id == item_id, _lapsed(now), JobItem.lost + 1 >= max_lost)
        .values(
            status=ITEM_FAILED,
            worker=worker,
            lease_until=None,
            finished_at=now,
            lost=JobItem.lost + 1,
            error_code="worker_lost",
            error_message=message[:500],
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def claim_item(
    session: AsyncSession,
    item_id: int,
    worker: str,
    now: datetime,
    lease_until: datetime,
    max_lost: int,
) -> bool:
    """Take an item: queued, or running under a lease that lapsed (its worker died, which
    counts in ``lost``) fewer than ``max_lost`` times in all (see fail_lost_item)."""
    result = await session.execute(
        update(JobItem)
        .where(
            JobItem.id == item_id,
            or_(JobItem.status == ITEM_QUEUED, and_(_lapsed(now), JobItem.lost + 1 < max_lost)),
        )
        .values(
            status=ITEM_RUNNING,
            worker=worker,
            lease_until=lease_until,
            started_at=now,
            attempts=JobItem.attempts + 1,
            lost=JobItem.lost + case((JobItem.status == ITEM_RUNNING, 1), else_=0),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def renew_lease(
    session: AsyncSession, item_id: int, worker: str, lease_until: datetime
) -> bool:
    result = await session.execute(
        update(JobItem)
        .where(JobItem.id == item_id, JobItem.worker == worker, JobItem.status == ITEM_RUNNING)
        .values(lease_until=lease_until)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def release_item(session: AsyncSession, item_id: int, worker: str) -> bool:
    """Give a claimed item back to the queue (a transient failure: retry later)."""
    result = await session.execute(
        update(JobItem)
        .where(JobItem.id == item_id, JobItem.worker == worker, JobItem.status == ITEM_RUNNING)
        .values(status=ITEM_QUEUED, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def finish_item(
    session: AsyncSession,
    item_id: int,
    worker: str,
    *,
    status: str,
    now: datetime,
    analysis_id: uuid.UUID | None = None,
    summary: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> bool:
    """Record an item's outcome, only while this worker still holds it."""
    assert status in (ITEM_DONE, ITEM_FAILED, ITEM_CANCELLED)
    result = await session.execute(
        update(JobItem)
        .where(JobItem.id == item_id, JobItem.worker == worker, JobItem.status == ITEM_RUNNING)
        .values(
            status=status,
            finished_at=now,
            lease_until=None,
            analysis_id=analysis_id,
            summary=summary,
            error_code=error_code,
            error_message=(error_message or "")[:500] or None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def cancel_open(session: AsyncSession, job_id: uuid.UUID, now: datetime) -> int:
    """Cancel every item of the job that no live worker holds: queued ones, and running ones
    whose lease lapsed (their worker died)."""
    result = await session.execute(
        update(JobItem)
        .where(
            JobItem.job_id == job_id,
            or_(JobItem.status == ITEM_QUEUED, _lapsed(now)),
        )
        .values(status=ITEM_CANCELLED, finished_at=now, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def cancelled_unfinished_jobs(session: AsyncSession) -> list[uuid.UUID]:
    """Jobs cancelled but not closed yet (an item was running when they were cancelled)."""
    rows = await session.scalars(
        select(Job.id).where(Job.cancelled_at.is_not(None), Job.finished_at.is_(None))
    )
    return list(rows)


async def idle_unfinished_jobs(session: AsyncSession) -> list[uuid.UUID]:
    """Jobs not closed although none of their items is open: a process stopped between
    finishing a job's last item and closing the job."""
    open_item = (
        select(JobItem.id)
        .where(JobItem.job_id == Job.id, JobItem.status.in_((ITEM_QUEUED, ITEM_RUNNING)))
        .exists()
    )
    rows = await session.scalars(
        select(Job.id).where(Job.finished_at.is_(None), Job.cancelled_at.is_(None), ~open_item)
    )
    return list(rows)


async def mark_started(session: AsyncSession, job_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="running", started_at=now)
        .execution_options(synchronize_session=False)
    )


async def unfinished_count(session: AsyncSession, job_id: uuid.UUID) -> int:
    return int(
        await session.scalar(
            select(func.count(JobItem.id)).where(
                JobItem.job_id == job_id, JobItem.status.not_in(ITEM_TERMINAL)
            )
        )
        or 0
    )


async def finalize(session: AsyncSession, job_id: uuid.UUID, status: str, now: datetime) -> bool:
    """Mark a job finished once (the first worker to see it has no open items wins)."""
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.finished_at.is_(None))
        .values(status=status, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def open_items_for_backend(
    session: AsyncSession, backend: str
) -> list[tuple[uuid.UUID, int]]:
    """(job, index) of every item not finished yet, of jobs run by this back end."""
    rows = await session.execute(
        select(JobItem.job_id, JobItem.index)
        .join(Job, Job.id == JobItem.job_id)
        .where(Job.backend == backend, JobItem.status.in_((ITEM_QUEUED, ITEM_RUNNING)))
        .order_by(Job.created_at, JobItem.index)
    )
    return [(r[0], int(r[1])) for r in rows]


async def expire_leases(session: AsyncSession, backend: str, now: datetime) -> int:
    """Let the items a previous process of a one-process back end held be taken over now."""
    jobs = select(Job.id).where(Job.backend == backend)
    result = await session.execute(
        update(JobItem)
        .where(JobItem.status == ITEM_RUNNING, JobItem.job_id.in_(jobs))
        .values(lease_until=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def delete_job(session: AsyncSession, job: Job) -> None:
    await session.delete(job)
    await session.flush()


async def open_input_bytes_of(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Bytes of the uploaded files of this user's jobs that are not finished (kept until then)."""
    total = await session.scalar(
        select(func.coalesce(func.sum(JobItem.size_bytes), 0))
        .join(Job, Job.id == JobItem.job_id)
        .where(Job.user_id == user_id, Job.finished_at.is_(None))
    )
    return int(total or 0)


async def open_jobs_of(session: AsyncSession, user_id: uuid.UUID) -> int:
    """This user's jobs that are not finished."""
    total = await session.scalar(
        select(func.count(Job.id)).where(Job.user_id == user_id, Job.finished_at.is_(None))
    )
    return int(total or 0)


async def finished_before(
    session: AsyncSession, job_ids: list[uuid.UUID], cutoff: datetime
) -> list[uuid.UUID]:
    """Which of these jobs finished before ``cutoff``."""
    found: dict[uuid.UUID, datetime | None] = {}
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        rows = await session.execute(select(Job.id, Job.finished_at).where(Job.id.in_(chunk)))
        found.update({r[0]: r[1] for r in rows})
    return [j for j, at in found.items() if at is not None and at < cutoff]
