"""Pure security helpers: password hashing, JWT access tokens, API keys. No I/O, no database."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from jose import ExpiredSignatureError, JWTError, jwt
from passlib.context import CryptContext

ALGORITHM = "HS256"
API_KEY_PREFIX = "ssk_"


class TokenError(Exception):
    """A bearer token that cannot be accepted; ``code`` is token_expired or invalid_token."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@lru_cache(maxsize=8)
def _context(time_cost: int, memory_kib: int) -> CryptContext:
    return CryptContext(
        schemes=["argon2"], argon2__time_cost=time_cost, argon2__memory_cost=memory_kib
    )


def hash_password(password: str, *, time_cost: int = 3, memory_kib: int = 65536) -> str:
    """argon2id hash of a password (salted, parameters stored in the hash)."""
    return _context(time_cost, memory_kib).hash(password)


def verify_password(password: str, hashed: str) -> bool:
    """True when the password matches; works whatever parameters the hash was made with."""
    try:
        return _context(3, 65536).verify(password, hashed)
    except (ValueError, TypeError):
        return False


def burn_password_check(password: str, *, time_cost: int = 3, memory_kib: int = 65536) -> None:
    """Spend about the time of a real check, so unknown emails cannot be told apart by timing."""
    verify_password(password, _dummy_hash(time_cost, memory_kib))


@lru_cache(maxsize=8)
def _dummy_hash(time_cost: int, memory_kib: int) -> str:
    return hash_password(secrets.token_hex(16), time_cost=time_cost, memory_kib=memory_kib)


DEFAULT_ISSUER = "spondyscan"
DEFAULT_AUDIENCE = "spondyscan-api"


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    expires_at: datetime
    # The user's token generation when it was issued: logging out or changing the password
    # moves the user to the next generation, which revokes every earlier token.
    generation: int


def create_access_token(
    user_id: uuid.UUID,
    secret: str,
    minutes: int,
    now: datetime | None = None,
    *,
    generation: int = 0,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
) -> tuple[str, datetime]:
    """A signed HS256 JWT for the user (issuer, audience, generation), with its expiry time."""
    issued = now or datetime.now(UTC)
    expires = issued + timedelta(minutes=minutes)
    claims = {
        "sub": str(user_id),
        "iss": issuer,
        "aud": audience,
        "iat": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
        "typ": "access",
        "gen": int(generation),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), expires


def decode_access_token(
    token: str, secret: str, *, issuer: str = DEFAULT_ISSUER, audience: str = DEFAULT_AUDIENCE
) -> TokenClaims:
    """Verify signature, expiry, issuer and audience; raise TokenError with a code."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=audience,
            options={"require_iss": True, "require_aud": True, "require_exp": True},
        )
    except ExpiredSignatureError as exc:
        raise TokenError("token_expired", "The access token has expired; log in again.") from exc
    except JWTError as exc:
        raise TokenError("invalid_token", "The access token is not valid.") from exc
    if claims.get("typ") != "access":
        raise TokenError("invalid_token", "The token is not an access token.")
    try:
        user_id = uuid.UUID(str(claims["sub"]))
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
        generation = int(claims["gen"])
    except (KeyError, ValueError, TypeError, OverflowError, OSError) as exc:
        # OverflowError / OSError: an expiry beyond what a datetime holds (exp=10**20).
        raise TokenError("invalid_token", "The access token is not valid.") from exc
    return TokenClaims(user_id=user_id, expires_at=expires, generation=generation)


def new_api_key() -> tuple[str, str, str]:
    """A fresh API key: (full key shown once, lookup prefix, sha256 hex stored).

    Keys carry 256 bits of randomness, so a fast hash is enough to make the stored value useless
    to a thief while keeping per-request verification cheap (unlike passwords).
    """
    body = secrets.token_urlsafe(32)
    key = f"{API_KEY_PREFIX}{body}"
    return key, key[: len(API_KEY_PREFIX) + 8], hash_api_key(key)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def api_key_prefix(key: str) -> str | None:
    """The lookup prefix of a presented key, or None when it is not shaped like one of ours."""
    if not key.startswith(API_KEY_PREFIX) or len(key) < len(API_KEY_PREFIX) + 16:
        return None
    return key[: len(API_KEY_PREFIX) + 8]
