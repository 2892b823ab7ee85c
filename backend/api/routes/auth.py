"""Sign-up, log-in, log-out, password change, the current user and API keys."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from backend.api.deps import CallerDep, CurrentUser, GuardsDep, SessionDep, SettingsDep
from backend.schemas.auth import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    PasswordChange,
    Token,
    UserCreate,
    UserPublic,
)
from backend.schemas.common import error_responses
from backend.services import auth as auth_service

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/signup",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409, 413, 422, 429, 503),
)
async def signup(
    data: UserCreate,
    session: SessionDep,
    settings: SettingsDep,
    guards: GuardsDep,
    caller: CallerDep,
) -> UserPublic:
    """Create an account with an email and a password (at least 8 characters)."""
    user = await auth_service.signup(session, settings, guards, caller, data)
    return UserPublic.model_validate(user)


@router.post("/token", response_model=Token, responses=error_responses(401, 413, 422, 429, 503))
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    guards: GuardsDep,
    caller: CallerDep,
) -> Token:
    """Log in (OAuth2 password flow, `username` = email) and get a bearer access token."""
    return await auth_service.login(session, settings, guards, caller, form.username, form.password)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 503),
)
async def logout(principal: CurrentUser, session: SessionDep) -> Response:
    """Revoke every access token of your account issued so far (log out everywhere)."""
    await auth_service.logout(session, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password",
    response_model=Token,
    responses=error_responses(401, 403, 413, 422, 429, 503),
)
async def change_password(
    data: PasswordChange,
    principal: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    guards: GuardsDep,
) -> Token:
    """Change your password; earlier tokens stop working and a new one is returned."""
    return await auth_service.change_password(
        session, settings, guards, principal, data.current_password, data.new_password
    )


@router.get("/me", response_model=UserPublic, responses=error_responses(401, 503))
async def read_me(principal: CurrentUser) -> UserPublic:
    """The account the credentials belong to."""
    return UserPublic.model_validate(principal.user)


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 413, 422, 503),
)
async def create_api_key(
    data: ApiKeyCreate, principal: CurrentUser, session: SessionDep
) -> ApiKeyCreated:
    """Create an API key for a service account; the key is shown in this response only."""
    return await auth_service.create_api_key(session, principal, data.name)


@router.get(
    "/api-keys", response_model=list[ApiKeyPublic], responses=error_responses(401, 403, 503)
)
async def list_api_keys(principal: CurrentUser, session: SessionDep) -> list[ApiKeyPublic]:
    """Your API keys (never the keys themselves), newest first."""
    return await auth_service.list_api_keys(session, principal)


@router.delete(
    "/api-keys/{key_id}",
    response_model=ApiKeyPublic,
    responses=error_responses(401, 403, 404, 422, 503),
)
async def revoke_api_key(
    key_id: uuid.UUID, principal: CurrentUser, session: SessionDep
) -> ApiKeyPublic:
    """Revoke one of your API keys; it stops working at once."""
    return await auth_service.revoke_api_key(session, principal, key_id)
