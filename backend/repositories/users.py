"""User and API key queries."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.models import ApiKey, User


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email.strip().lower()))


async def add_user(session: AsyncSession, email: str, hashed_password: str, role: str) -> User:
    user = User(email=email.strip().lower(), hashed_password=hashed_password, role=role)
    session.add(user)
    await session.flush()
    return user


async def add_api_key(
    session: AsyncSession, user_id: uuid.UUID, name: str, prefix: str, key_hash: str
) -> ApiKey:
    key = ApiKey(user_id=user_id, name=name, prefix=prefix, key_hash=key_hash)
    session.add(key)
    await session.flush()
    return key


async def list_api_keys(session: AsyncSession, user_id: uuid.UUID) -> list[ApiKey]:
    rows = await session.scalars(
        select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc())
    )
    return list(rows)


async def get_api_key(
    session: AsyncSession, key_id: uuid.UUID, user_id: uuid.UUID
) -> ApiKey | None:
    return await session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id)
    )


async def get_api_key_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    return await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))


async def mark_api_key_used(session: AsyncSession, key: ApiKey, when: datetime) -> None:
    key.last_used_at = when
    await session.flush()
