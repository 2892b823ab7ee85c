"""History queries: stored analyses and their per-model results."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import Analysis, ModelResult
from backend.schemas.results import HistoryFilter, ResultFilter


async def add_analysis(
    session: AsyncSession, analysis: Analysis, model_results: list[ModelResult]
) -> Analysis:
    analysis.model_results = model_results
    session.add(analysis)
    await session.flush()
    return analysis


async def get_analysis(session: AsyncSession, analysis_id: uuid.UUID) -> Analysis | None:
    return await session.get(Analysis, analysis_id)


async def get_analysis_for(
    session: AsyncSession, analysis_id: uuid.UUID, user_id: uuid.UUID, *, admin: bool = False
) -> Analysis | None:
    """The analysis if this user may see it (its owner, or an admin); otherwise None."""
    query = select(Analysis).where(Analysis.id == analysis_id)
    if not admin:
        query = query.where(Analysis.user_id == user_id)
    return await session.scalar(query)


def _as_datetime(value: date | datetime, *, end: bool) -> datetime:
    if isinstance(value, datetime):
        return value
    # A bare date means the whole day: from its start, or up to the start of the next day.
    if end and value == date.max:
        return datetime.max  # there is no next day; nothing is stored that late anyway
    return datetime.combine(value + timedelta(days=1) if end else value, time.min)


def filter_results(query: Select, table: Any, user_id: uuid.UUID, f: ResultFilter) -> Select:
    """The filters history and studies share, on any table with the headline columns."""
    query = query.where(table.user_id == user_id)
    if f.date_from is not None:
        query = query.where(table.created_at >= _as_datetime(f.date_from, end=False))
    if f.date_to is not None:
        bound = _as_datetime(f.date_to, end=True)
        query = query.where(
            table.created_at < bound
            if not isinstance(f.date_to, datetime)
            else table.created_at <= bound
        )
    if f.as_status is not None:
        query = query.where(table.as_status == f.as_status)
    if f.stage is not None:
        query = query.where(func.lower(table.stage) == f.stage.lower())
    if f.model is not None:
        used = select(ModelResult.analysis_id).where(ModelResult.model_key == f.model)
        query = query.where(table.id.in_(used))
    return query


def _filtered(query: Select, user_id: uuid.UUID, f: HistoryFilter) -> Select:
    query = filter_results(query, Analysis, user_id, f)
    if f.kind is not None:
        query = query.where(Analysis.kind == f.kind)
    return query


async def list_analyses(
    session: AsyncSession, user_id: uuid.UUID, f: HistoryFilter
) -> tuple[list[Analysis], int]:
    """One page of the user's analyses, newest first, and the total matching the filter."""
    total = await session.scalar(_filtered(select(func.count(Analysis.id)), user_id, f)) or 0
    query = (
        _filtered(select(Analysis), user_id, f)
        .order_by(Analysis.created_at.desc(), Analysis.id.desc())
        .limit(f.limit)
        .offset(f.offset)
    )
    return list(await session.scalars(query)), int(total)


async def delete_analysis(session: AsyncSession, analysis: Analysis) -> None:
    await session.delete(analysis)
    await session.flush()


async def results_by_ids(
    session: AsyncSession, analysis_ids: list[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    """The stored result body of each of these analyses that exists."""
    if not analysis_ids:
        return {}
    rows = await session.execute(
        select(Analysis.id, Analysis.result).where(Analysis.id.in_(analysis_ids))
    )
    return {r[0]: r[1] for r in rows}


async def stored_bytes_of(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Bytes of every stored result of this user (their quota counts them)."""
    total = await session.scalar(
        select(func.coalesce(func.sum(Analysis.stored_bytes), 0)).where(Analysis.user_id == user_id)
    )
    return int(total or 0)


async def existing_ids(session: AsyncSession, analysis_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these analyses have a row."""
    found: set[uuid.UUID] = set()
    for start in range(0, len(analysis_ids), 500):
        chunk = analysis_ids[start : start + 500]
        found.update(await session.scalars(select(Analysis.id).where(Analysis.id.in_(chunk))))
    return found
