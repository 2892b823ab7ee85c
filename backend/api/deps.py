"""Request dependencies: the runtime, a database session, the caller, an uploaded file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, File, Request, Security, UploadFile
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.config import Settings
from backend.core.errors import AppError, BadInput, NotReady
from backend.core.text import clean_name
from backend.runtime import Guards, Runtime
from backend.services.analysis import AnalysisContext, Upload
from backend.services.auth import Caller, Principal, authenticate

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/auth/token", auto_error=False, scheme_name="OAuth2Password"
)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="APIKey")

_CHUNK = 1024 * 1024


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReady("The service is starting; retry in a moment.")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings_dep(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_guards(runtime: RuntimeDep) -> Guards:
    return runtime.guards


GuardsDep = Annotated[Guards, Depends(get_guards)]


def get_caller(request: Request) -> Caller:
    # The peer address as the server sees it (uvicorn's --proxy-headers and
    # --forwarded-allow-ips decide whether a trusted proxy's X-Forwarded-For replaces it).
    return Caller(address=request.client.host if request.client else "unknown")


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_principal(
    session: SessionDep,
    settings: SettingsDep,
    bearer: Annotated[str | None, Security(oauth2_scheme)] = None,
    api_key: Annotated[str | None, Security(api_key_scheme)] = None,
) -> Principal:
    return await authenticate(session, settings, bearer=bearer, api_key=api_key)


CurrentUser = Annotated[Principal, Depends(get_principal)]


def get_analysis_context(runtime: RuntimeDep, session: SessionDep) -> AnalysisContext:
    return AnalysisContext.from_runtime(runtime, session)


AnalysisDep = Annotated[AnalysisContext, Depends(get_analysis_context)]


async def read_upload(
    settings: SettingsDep,
    file: Annotated[
        UploadFile,
        File(
            description="the image: PNG, JPEG, .npy, DICOM or NIfTI (recognised by content)",
            json_schema_extra={"minLength": 1},
        ),
    ],
) -> Upload:
    """The uploaded bytes, refusing more than settings.max_upload_bytes without reading it all."""
    limit = settings.max_upload_bytes
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await file.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise AppError(
                    f"The upload is larger than the {limit // (1024 * 1024)} MiB limit.",
                    code="too_large",
                    status_code=413,
                )
            chunks.append(chunk)
    finally:
        await file.close()
    if size == 0:
        raise BadInput("The uploaded file is empty (0 bytes).", code="empty_image")
    return Upload(
        data=b"".join(chunks), filename=clean_name(file.filename), content_type=file.content_type
    )


UploadDep = Annotated[Upload, Depends(read_upload)]
