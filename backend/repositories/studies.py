"""Study rows: create, read, list with the history filters, progress and state changes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Study
from backend.models.study import STUDY_CANCELLED, STUDY_FAILED, STUDY_TERMINAL
from backend.repositories.analyses import filter_results
from backend.schemas.studies import StudyFilter


async def add_study(session: AsyncSession, study: Study) -> Study:
    session.add(study)
    await session.flush()
    return study


async def get_study(session: AsyncSession, study_id: uuid.UUID) -> Study | None:
    return await session.get(Study, study_id)


async def get_study_for(
    session: AsyncSession, study_id: uuid.UUID, user_id: uuid.UUID, *, admin: bool = False
) -> Study | None:
    """The study if this user may see it (its owner, or an admin); otherwise None."""
    query = select(Study).where(Study.id == study_id)
    if not admin:
        query = query.where(Study.user_id == user_id)
    return await session.scalar(query)


async def stored_as(session: AsyncSession, user_id: uuid.UUID, content_key: str) -> Study | None:
    """This user's newest study made of exactly these instances that has not failed or been
    cancelled (a deleted study is gone, so storing it again makes a new one)."""
    query = (
        select(Study)
        .where(
            Study.user_id == user_id,
            Study.content_key == content_key,
            Study.status.not_in((STUDY_FAILED, STUDY_CANCELLED)),
        )
        .order_by(Study.created_at.desc())
        .limit(1)
    )
    return await session.scalar(query)


async def list_studies(
    session: AsyncSession, user_id: uuid.UUID, f: StudyFilter
) -> tuple[list[Study], int]:
    """One page of the user's studies, newest first, and the total matching the filter."""

    def filtered(query: Any) -> Any:
        query = filter_results(query, Study, user_id, f)
        return query.where(Study.status == f.status) if f.status is not None else query

    total = await session.scalar(filtered(select(func.count(Study.id)))) or 0
    query = (
        filtered(select(Study))
        .order_by(Study.created_at.desc(), Study.id.desc())
        .limit(f.limit)
        .offset(f.offset)
    )
    return list(await session.scalars(query)), int(total)


async def set_progress(
    session: AsyncSession,
    study_id: uuid.UUID,
    *,
    phase: str,
    done: int,
    total: int,
    started_at: datetime | None = None,
) -> None:
    """Record the phase and slices done (a study that finished meanwhile is left alone)."""
    values: dict[str, Any] = {"phase": phase, "slices_done": done, "slices_total": total}
    values["status"] = "running"
    query = update(Study).where(Study.id == study_id, Study.status.not_in(STUDY_TERMINAL))
    if started_at is not None:
        values["started_at"] = func.coalesce(Study.started_at, started_at)
    await session.execute(query.values(**values))


async def finish(
    session: AsyncSession, study_id: uuid.UUID, status: str, now: datetime, **values: Any
) -> bool:
    """Move an open study to a final state; False when it was already final."""
    result = await session.execute(
        update(Study)
        .where(Study.id == study_id, Study.status.not_in(STUDY_TERMINAL))
        .values(status=status, finished_at=now, phase=None, **values)
    )
    return bool(getattr(result, "rowcount", 0))


async def delete_study(session: AsyncSession, study: Study) -> None:
    await session.delete(study)
    await session.flush()


async def set_push(session: AsyncSession, study_id: uuid.UUID, push: dict[str, Any]) -> None:
    """Record the outcome of sending the study's results over DICOMweb."""
    await session.execute(update(Study).where(Study.id == study_id).values(push=push))
