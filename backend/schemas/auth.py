"""Users, tokens and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from backend.core.text import no_control

_EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
MIN_PASSWORD_LENGTH = 8


class UserCreate(BaseModel):
    """Sign-up body."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "reader@example.org", "password": "a long passphrase"}]
        }
    )

    email: Annotated[str, AfterValidator(no_control)] = Field(
        max_length=320, pattern=_EMAIL_PATTERN
    )
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=256)

    @field_validator("email")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return value.strip().lower()


class PasswordChange(BaseModel):
    """The current password (checked again) and the new one."""

    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=256)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    role: Literal["user", "admin"]
    created_at: datetime


class Token(BaseModel):
    """OAuth2 bearer token response."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the token expires")
    expires_at: datetime


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "PACS bridge"}]})

    name: Annotated[str, AfterValidator(no_control)] = Field(min_length=1, max_length=100)


class ApiKeyPublic(BaseModel):
    """An API key as listed: never the key itself."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str = Field(description="first characters of the key, to recognise it")
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    active: bool


class ApiKeyCreated(ApiKeyPublic):
    """Returned once, at creation: the only time the full key is shown."""

    key: str = Field(
        description="send as the X-API-Key header; store it now, it is not shown again"
    )
