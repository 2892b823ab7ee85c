"""History use cases: list, read and delete one's own stored results, and read their images.

Someone else's entry is reported as not found (never 403), so ids cannot be probed.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import NotFound
from backend.models import Analysis
from backend.repositories import analyses as analyses_repo
from backend.repositories import audit
from backend.repositories import studies as studies_repo
from backend.schemas.results import AnyResult, HistoryFilter, HistoryItem, HistoryPage
from backend.services.auth import Principal
from backend.services.rendering import artifact_url
from backend.storage.artifacts import ArtifactStore

_RESULT = TypeAdapter(AnyResult)


def _item(row: Analysis) -> HistoryItem:
    return HistoryItem(
        id=row.id,
        kind=row.kind,  # type: ignore[arg-type]
        created_at=row.created_at,
        as_status=row.as_status,
        as_confidence=row.as_confidence,
        stage=row.stage,
        stage_confidence=row.stage_confidence,
        models=list(row.models or []),
        image_url=artifact_url(row.id, row.image_path) if row.image_path else None,
        filename=row.original_filename,
    )


async def list_history(
    session: AsyncSession, principal: Principal, filters: HistoryFilter
) -> HistoryPage:
    """The caller's own entries, newest first, filtered and paginated."""
    rows, total = await analyses_repo.list_analyses(session, principal.user_id, filters)
    return HistoryPage(
        items=[_item(r) for r in rows], total=total, limit=filters.limit, offset=filters.offset
    )


async def _owned(session: AsyncSession, principal: Principal, analysis_id: uuid.UUID) -> Analysis:
    row = await analyses_repo.get_analysis_for(
        session, analysis_id, principal.user_id, admin=principal.is_admin
    )
    if row is None:
        raise NotFound("No such result in your history.", code="analysis_not_found")
    return row


async def get_history_entry(
    session: AsyncSession, principal: Principal, analysis_id: uuid.UUID
) -> AnyResult:
    """The stored result exactly as it was returned."""
    row = await _owned(session, principal, analysis_id)
    return _RESULT.validate_python(row.result)


async def delete_history_entry(
    session: AsyncSession, store: ArtifactStore, principal: Principal, analysis_id: uuid.UUID
) -> None:
    """Delete the entry and its files; the audit log keeps a record that it existed.

    A study's result goes with its study (``DELETE /studies/{id}`` does the same)."""
    row = await _owned(session, principal, analysis_id)
    # Hide the files first (one rename) so a failed commit can put them back.
    trashed = await asyncio.to_thread(store.move_to_trash, analysis_id)
    try:
        await analyses_repo.delete_analysis(session, row)
        study = await studies_repo.get_study(session, analysis_id) if row.kind == "study" else None
        if study is not None:
            await studies_repo.delete_study(session, study)
        await audit.record(
            session,
            action="analysis.delete",
            actor=principal.actor,
            user_id=principal.user_id,
            target=str(analysis_id),
            detail={"kind": row.kind, "owner": str(row.user_id)},
        )
        await session.commit()
    except BaseException:
        await session.rollback()
        await asyncio.to_thread(store.restore, analysis_id, trashed)
        raise
    await asyncio.to_thread(store.purge, trashed)


async def artifact_file(
    session: AsyncSession,
    store: ArtifactStore,
    principal: Principal,
    analysis_id: uuid.UUID,
    name: str,
) -> Path:
    """The path of one image of a result, for its owner or an admin only."""
    await _owned(session, principal, analysis_id)
    path = store.path(analysis_id, name)
    if path is None:
        raise NotFound("No such artifact.", code="artifact_not_found")
    return path
