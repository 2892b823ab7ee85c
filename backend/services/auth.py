"""Sign-up, log-in, log-out, password change, credential checks and API keys (no HTTP).

Abuse limits live here too: sign-ups and log-ins are rate-limited per client address and per
account, repeated failed log-ins lock the account for a while (doubling each time), password
hashing runs on its own small pool, and an API key cannot manage API keys.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core import security
from backend.core.config import Settings
from backend.core.errors import Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized
from backend.core.text import has_control
from backend.models import ApiKey, User
from backend.repositories import audit
from backend.repositories import users as users_repo
from backend.runtime import Guards
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


@dataclass(frozen=True)
class Caller:
    """What an unauthenticated request tells about its sender: the client address."""

    address: str


async def _rate(guards: Guards, rule: str, message: str, *keys: str) -> None:
    wait = await guards.rates.hit(rule, *keys)
    if wait is not None:
        raise TooManyRequests(message, code="rate_limited", retry_after=wait)


async def _hash(settings: Settings, guards: Guards, password: str) -> str:
    # argon2 is deliberately slow and memory-hungry: its own bounded pool, off the event loop.
    return await guards.hashing.run(
        security.hash_password,
        password,
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
    )


async def signup(
    session: AsyncSession, settings: Settings, guards: Guards, caller: Caller, data: UserCreate
) -> User:
    """Create a user with the ordinary role (admins are made only by ``set_role``)."""
    await _rate(
        guards,
        settings.signup_rate,
        "Too many sign-ups from this address; retry later.",
        "signup",
        caller.address,
    )
    if await users_repo.get_user_by_email(session, data.email) is not None:
        raise Conflict("An account with this email already exists.", code="email_taken")
    hashed = await _hash(settings, guards, data.password)
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


def _token(settings: Settings, user: User) -> Token:
    token, expires = security.create_access_token(
        user.id,
        settings.secret_key.get_secret_value(),
        settings.access_token_minutes,
        generation=user.token_generation,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    return Token(
        access_token=token, expires_in=settings.access_token_minutes * 60, expires_at=expires
    )


def _locked_for(user: User, now: datetime) -> float:
    if user.locked_until is None:
        return 0.0
    locked_until = user.locked_until
    if locked_until.tzinfo is None:
        locked_until = locked_until.replace(tzinfo=UTC)
    return max(0.0, (locked_until - now).total_seconds())


async def _failed_login(session: AsyncSession, settings: Settings, user: User) -> None:
    """Count a failure; from ``lockout_failures`` in a row on, lock the account, doubling."""
    user.failed_logins += 1
    beyond = user.failed_logins - settings.lockout_failures
    if beyond >= 0:
        seconds = min(settings.lockout_max_seconds, settings.lockout_seconds * 2.0**beyond)
        user.locked_until = datetime.now(UTC) + timedelta(seconds=seconds)
    await audit.record(
        session,
        action="auth.login_failed",
        actor="user",
        user_id=user.id,
        detail={"failed_in_a_row": user.failed_logins},
    )
    await session.commit()


async def _check_password(
    settings: Settings, guards: Guards, user: User | None, password: str
) -> bool:
    if user is None:
        # Spend the time of a real check, so unknown emails cannot be told apart by timing.
        await guards.hashing.run(
            security.burn_password_check,
            password,
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
        )
        return False
    return await guards.hashing.run(security.verify_password, password, user.hashed_password)


async def login(
    session: AsyncSession,
    settings: Settings,
    guards: Guards,
    caller: Caller,
    email: str,
    password: str,
) -> Token:
    """Check email and password; return a signed access token."""
    account = email.strip().lower()
    await _rate(
        guards,
        settings.login_rate_per_address,
        "Too many log-in attempts from this address; retry later.",
        "login-address",
        caller.address,
    )
    await _rate(
        guards,
        settings.login_rate_per_account,
        "Too many log-in attempts for this account; retry later.",
        "login-account",
        account,
    )
    # No account has control characters in its e-mail (sign-up refuses them): do not ask.
    user = None if has_control(account) else await users_repo.get_user_by_email(session, account)
    if user is not None and (wait := _locked_for(user, datetime.now(UTC))) > 0:
        raise TooManyRequests(
            "This account is locked for a while after repeated failed log-ins.",
            code="account_locked",
            retry_after=wait,
        )
    ok = await _check_password(settings, guards, user, password)
    if not ok or user is None or not user.is_active:
        if user is not None:
            await _failed_login(session, settings, user)
        raise Unauthorized("Incorrect email or password.", code="invalid_credentials")
    user.failed_logins, user.locked_until = 0, None
    await audit.record(session, action="auth.login", actor="user", user_id=user.id)
    await session.commit()
    return _token(settings, user)


def _password_session_only(principal: Principal, what: str) -> None:
    """Key management and sessions need the account's password, not an API key."""
    if principal.api_key_id is not None:
        raise Forbidden(
            f"An API key cannot {what}; log in with the account's password.",
            code="api_key_not_allowed",
        )


async def logout(session: AsyncSession, principal: Principal) -> None:
    """Revoke every access token of the account issued so far (log out everywhere)."""
    _password_session_only(principal, "log out")
    principal.user.token_generation += 1
    await audit.record(session, action="auth.logout", actor="user", user_id=principal.user_id)
    await session.commit()


async def change_password(
    session: AsyncSession,
    settings: Settings,
    guards: Guards,
    principal: Principal,
    current: str,
    new: str,
) -> Token:
    """Replace the password after checking the current one; earlier tokens stop working."""
    _password_session_only(principal, "change the password")
    user = principal.user
    if not await _check_password(settings, guards, user, current):
        await _failed_login(session, settings, user)
        # 403, not 401: the caller is authenticated (their session stays valid), the change is
        # what is refused.
        raise Forbidden("The current password is not correct.", code="invalid_current_password")
    user.hashed_password = await _hash(settings, guards, new)
    user.token_generation += 1
    user.failed_logins, user.locked_until = 0, None
    await audit.record(session, action="auth.password_changed", actor="user", user_id=user.id)
    await session.commit()
    return _token(settings, user)


async def principal_from_token(session: AsyncSession, settings: Settings, token: str) -> Principal:
    try:
        claims = security.decode_access_token(
            token,
            settings.secret_key.get_secret_value(),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    except security.TokenError as exc:
        raise Unauthorized(exc.message, code=exc.code) from exc
    user = await users_repo.get_user(session, claims.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("The account for this token no longer exists.", code="invalid_token")
    if claims.generation != user.token_generation:
        raise Unauthorized(
            "This token was revoked (log-out or password change); log in again.",
            code="token_revoked",
        )
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
    _password_session_only(principal, "create API keys")
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
    _password_session_only(principal, "list API keys")
    return [_key_public(r) for r in await users_repo.list_api_keys(session, principal.user_id)]


async def revoke_api_key(
    session: AsyncSession, principal: Principal, key_id: uuid.UUID
) -> ApiKeyPublic:
    """Revoke one of the caller's keys (idempotent); someone else's key is simply not found."""
    _password_session_only(principal, "revoke API keys")
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
