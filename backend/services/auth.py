"""Sign-up, log-in, credential checks and API keys (use cases; no HTTP)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core import security
from backend.core.config import Settings
from backend.core.errors import Conflict, NotFound, Unauthorized
from backend.models import ApiKey, User
from backend.repositories import audit
from backend.repositories import users as users_repo
from backend.schemas.auth import ApiKeyCreated, ApiKeyPublic, Token, UserCreate


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user, and the API key when one was used instead of a token."""

    user: User
    api_key_id: uuid.UUID | None = None

    @property
    def user_id(self) -> uuid.UUID:
        return self.user.id

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin

    @property
    def actor(self) -> str:
        return f"api_key:{self.api_key_id}" if self.api_key_id else "user"


async def signup(session: AsyncSession, settings: Settings, data: UserCreate) -> User:
    """Create a user with the ordinary role (admins are made only by ``set_role``)."""
    if await users_repo.get_user_by_email(session, data.email) is not None:
        raise Conflict("An account with this email already exists.", code="email_taken")
    # argon2 is deliberately slow: keep it off the event loop.
    hashed = await asyncio.to_thread(
        security.hash_password,
        data.password,
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
    )
    try:
        user = await users_repo.add_user(session, data.email, hashed, "user")
        await audit.record(
            session, action="auth.signup", actor="user", user_id=user.id, target=str(user.id)
        )
        await session.commit()
    except IntegrityError as exc:  # two sign-ups racing for one email
        await session.rollback()
        raise Conflict("An account with this email already exists.", code="email_taken") from exc
    return user


ROLES = ("user", "admin")


async def set_role(session: AsyncSession, email: str, role: str, *, actor: str = "cli") -> User:
    """Give an existing account ``role`` (the only way to make or unmake an admin).

    Sign-up is open and emails are not verified, so the role is never derived from the email:
    an operator grants it (``spondyscan admin grant EMAIL``).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    user = await users_repo.get_user_by_email(session, email)
    if user is None:
        raise NotFound(f"No account with the email {email.strip().lower()}.", code="user_not_found")
    previous = user.role
    user.role = role
    await audit.record(
        session,
        action="auth.role_changed",
        actor=actor,
        user_id=user.id,
        target=str(user.id),
        detail={"from": previous, "to": role},
    )
    await session.commit()
    return user


async def login(session: AsyncSession, settings: Settings, email: str, password: str) -> Token:
    """Check email and password; return a signed access token."""
    user = await users_repo.get_user_by_email(session, email)
    if user is None:
        await asyncio.to_thread(
            security.burn_password_check,
            password,
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
        )
        ok = False
    else:
        ok = await asyncio.to_thread(security.verify_password, password, user.hashed_password)
    if not ok or user is None or not user.is_active:
        if user is not None:
            await audit.record(session, action="auth.login_failed", actor="user", user_id=user.id)
            await session.commit()
        raise Unauthorized("Incorrect email or password.", code="invalid_credentials")
    token, expires = security.create_access_token(
        user.id, settings.secret_key.get_secret_value(), settings.access_token_minutes
    )
    await audit.record(session, action="auth.login", actor="user", user_id=user.id)
    await session.commit()
    return Token(
        access_token=token,
        expires_in=settings.access_token_minutes * 60,
        expires_at=expires,
    )


async def principal_from_token(session: AsyncSession, settings: Settings, token: str) -> Principal:
    try:
        claims = security.decode_access_token(token, settings.secret_key.get_secret_value())
    except security.TokenError as exc:
        raise Unauthorized(exc.message, code=exc.code) from exc
    user = await users_repo.get_user(session, claims.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("The account for this token no longer exists.", code="invalid_token")
    return Principal(user=user)


async def principal_from_api_key(session: AsyncSession, key: str) -> Principal:
    if security.api_key_prefix(key) is None:
        raise Unauthorized("The API key is not valid.", code="invalid_api_key")
    row = await users_repo.get_api_key_by_hash(session, security.hash_api_key(key))
    if row is None:
        raise Unauthorized("The API key is not valid.", code="invalid_api_key")
    if row.revoked_at is not None:
        raise Unauthorized("The API key has been revoked.", code="revoked_api_key")
    user = await users_repo.get_user(session, row.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("The API key's account is disabled.", code="invalid_api_key")
    await users_repo.mark_api_key_used(session, row, datetime.now(UTC))
    return Principal(user=user, api_key_id=row.id)


async def authenticate(
    session: AsyncSession, settings: Settings, *, bearer: str | None, api_key: str | None
) -> Principal:
    """Resolve the caller from a bearer token or an X-API-Key header (one is required).

    Commits before returning so no database connection stays checked out while the request
    waits for inference.
    """
    if api_key:
        principal = await principal_from_api_key(session, api_key)
    elif bearer:
        principal = await principal_from_token(session, settings, bearer)
    else:
        raise Unauthorized(
            "Authentication required: send a bearer token or an X-API-Key header.",
            code="not_authenticated",
        )
    await session.commit()
    return principal


def _key_public(row: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        active=row.revoked_at is None,
    )


async def create_api_key(session: AsyncSession, principal: Principal, name: str) -> ApiKeyCreated:
    """Create an API key for the caller; the full key is in this response only."""
    key, prefix, key_hash = security.new_api_key()
    row = await users_repo.add_api_key(session, principal.user_id, name.strip(), prefix, key_hash)
    await audit.record(
        session,
        action="api_key.create",
        actor=principal.actor,
        user_id=principal.user_id,
        target=str(row.id),
        detail={"name": row.name},
    )
    await session.commit()
    return ApiKeyCreated(**_key_public(row).model_dump(), key=key)


async def list_api_keys(session: AsyncSession, principal: Principal) -> list[ApiKeyPublic]:
    return [_key_public(r) for r in await users_repo.list_api_keys(session, principal.user_id)]


async def revoke_api_key(
    session: AsyncSession, principal: Principal, key_id: uuid.UUID
) -> ApiKeyPublic:
    """Revoke one of the caller's keys (idempotent); someone else's key is simply not found."""
    row = await users_repo.get_api_key(session, key_id, principal.user_id)
    if row is None:
        raise NotFound("No such API key.", code="api_key_not_found")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        await audit.record(
            session,
            action="api_key.revoke",
            actor=principal.actor,
            user_id=principal.user_id,
            target=str(row.id),
        )
        await session.commit()
    return _key_public(row)
