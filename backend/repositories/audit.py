"""The audit log: append only."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import AuditEvent


async def record(
    session: AsyncSession,
    *,
    action: str,
    actor: str,
    user_id: uuid.UUID | None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an event to the session; it is written with the caller's transaction."""
    event = AuditEvent(
        action=action, actor=actor, user_id=user_id, target=target, detail=detail or {}
    )
    session.add(event)
    return event


async def list_events(
    session: AsyncSession, *, user_id: uuid.UUID | None = None, action: str | None = None
) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id)
    if user_id is not None:
        query = query.where(AuditEvent.user_id == user_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return list(await session.scalars(query))
