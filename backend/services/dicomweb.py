"""DICOMweb use cases: a hospital router pushes a series (STOW-RS in), spondyscan pulls a study
from the PACS (QIDO-RS + WADO-RS), and sends its results back (STOW-RS out).

* ``stow_in``: the instances of a ``multipart/related`` body become a study (the same intake and
  analysis as ``POST /studies``); the answer is the standard STOW-RS response, its RetrieveURL
  (0008,1190) the study's URL in this API.
* ``pull``: QIDO-RS lists the study's series, WADO-RS metadata gives each MR series' orientation,
  the sagittal one with the most instances is retrieved (WADO-RS) and analysed.
* ``push``: once a study is stored, its SEG, SR and parametric maps are stored on the server
  (STOW-RS) and the outcome recorded on the study (``push``), shown by ``GET /studies/{id}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import AppError, BadInput
from backend.interop import multipart
from backend.interop.dicomweb import DicomwebClient, DicomwebError, is_sagittal
from backend.repositories import analyses as analyses_repo
from backend.repositories import jobs as jobs_repo
from backend.repositories import studies as studies_repo
from backend.runtime import Runtime
from backend.schemas.studies import PullRequest, StudyOptions, StudyPublic
from backend.services.auth import Principal
from backend.services.job_intake import IncomingFile
from backend.services.jobs import JobExecutor
from backend.services.studies import get_study, submit_study
from backend.services.study_intake import StagedStudy

log = logging.getLogger(__name__)

# STOW-RS failure reasons (PS3.18 Table 10.5.3-1): cannot understand; processing failure.
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110


def client_for(runtime: Runtime) -> DicomwebClient:
    s = runtime.settings
    if not s.dicomweb_url:
        raise AppError(
            "No DICOMweb server is configured (SPONDYSCAN_DICOMWEB_URL).",
            code="dicomweb_not_configured",
            status_code=409,
        )
    password = s.dicomweb_password.get_secret_value() if s.dicomweb_password else None
    return DicomwebClient(
        s.dicomweb_url, username=s.dicomweb_username, password=password, timeout=s.dicomweb_timeout
    )


# ----------------------------------------------------------------------------- STOW-RS in


def _uids(payload: bytes) -> tuple[str, str, str] | None:
    """(SOP class, SOP instance, series) UIDs of a part, or None when it is not DICOM."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(payload), stop_before_pixels=True)
        return str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)
    except Exception:  # noqa: BLE001 - pydicom raises many types; the part is reported failed
        return None


def _sop(item: tuple[str, str, str], **extra: Any) -> dict[str, Any]:
    out = {
        "00081150": {"vr": "UI", "Value": [item[0]]},
        "00081155": {"vr": "UI", "Value": [item[1]]},
    }
    out.update(extra)
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("ascii", "replace")).hexdigest()


def content_key(uids: list[tuple[str, str, str] | None]) -> str | None:
    """A digest of the sorted SOP Instance UIDs of the parts that are DICOM (None if none are):
    the same instances stored again give the same key, whatever their order."""
    sops = sorted({item[1] for item in uids if item is not None})
    return _digest("\n".join(sops)) if sops else None


def _stow_response(
    url: str, uids: list[tuple[str, str, str] | None], refused: dict[str, int]
) -> tuple[dict[str, Any], int]:
    """The STOW-RS answer: each part referenced, or failed with its reason (``refused`` maps
    the digest of a refused SOP Instance UID to its reason; an instance repeated within the
    request is referenced once, its copies failed)."""
    referenced, failed, seen = [], [], set()
    for item in uids:
        if item is None:
            failed.append({"00081197": {"vr": "US", "Value": [CANNOT_UNDERSTAND]}})
        elif _digest(item[1]) in refused or item[1] in seen:
            reason = refused.get(_digest(item[1]), PROCESSING_FAILURE)
            failed.append(_sop(item, **{"00081197": {"vr": "US", "Value": [reason]}}))
        else:
            seen.add(item[1])
            referenced.append(_sop(item, **{"00081190": {"vr": "UR", "Value": [url]}}))
    response: dict[str, Any] = {
        "00081190": {"vr": "UR", "Value": [url]},
        "00081199": {"vr": "SQ", "Value": referenced},
    }
    if failed:
        response["00081198"] = {"vr": "SQ", "Value": failed}
    return response, 202 if failed else 200


async def stow_in(
    session: AsyncSession,
    runtime: Runtime,
    executor: JobExecutor,
    principal: Principal,
    content_type: str,
    body: bytes,
) -> tuple[dict[str, Any], StudyPublic, int]:
    """Store a STOW-RS request's instances as a study; (STOW response, study, HTTP status).

    Storing the same instances again (a router that resends after its answer was lost) is
    idempotent, as in a PACS: while this user's study of exactly those instances exists and has
    not failed or been cancelled, the answer names that study and nothing new is analysed.
    """
    limit = runtime.settings.study_max_instances
    try:
        boundary = multipart.boundary_of(content_type)
        if (n := multipart.count(body, boundary)) > limit:
            raise AppError(
                f"A study can hold at most {limit} instances; this request has {n} parts.",
                code="too_many_instances",
                status_code=413,
            )
        parts = multipart.split(body, boundary)
    except multipart.MultipartError as exc:
        raise BadInput(str(exc), code="bad_multipart", status_code=400) from exc
    kind = multipart.part_type(content_type)
    if kind not in (None, "application/dicom"):
        raise AppError(
            "Only application/dicom instances can be stored here.",
            code="unsupported_media_type",
            status_code=415,
        )
    names = [f"part-{i:04d}.dcm" for i in range(len(parts))]
    uids = await runtime.guards.decoding.run(lambda: [_uids(p) for _, p in parts])
    key = content_key(uids)
    if key is not None:
        existing = await studies_repo.stored_as(session, principal.user_id, key)
        if existing is not None:
            log.info(
                "STOW-RS: the same %d instances again; answering with study %s",
                sum(u is not None for u in uids),
                existing.id,
            )
            study = await get_study(session, principal, existing.id)
            response, status = _stow_response(study.url, uids, existing.refused_instances or {})
            return response, study, status

    def refusals(staged: StagedStudy) -> dict[str, int]:
        # Truncated, or another series than the one analysed (a copy of a kept instance is not
        # a refusal of that instance: the answer fails the copy only).
        kept = {name for name, _ in staged.files}
        kept_uids = {
            item[1] for name, item in zip(names, uids, strict=True) if item and name in kept
        }
        return {
            _digest(item[1]): PROCESSING_FAILURE
            for name, item in zip(names, uids, strict=True)
            if item is not None and name not in kept and item[1] not in kept_uids
        }

    files = [IncomingFile(n, io.BytesIO(p)) for n, (_, p) in zip(names, parts, strict=True)]
    options = StudyOptions(models=[])
    study, staged = await submit_study(
        session,
        runtime,
        executor,
        principal,
        files,
        options,
        content_key=key,
        refusals=refusals,
    )
    response, status = _stow_response(study.url, uids, refusals(staged))
    return response, study, status


# ----------------------------------------------------------------------------- pull


async def _sagittal_series(client: DicomwebClient, study_uid: str) -> str:
    found = [s for s in await client.series(study_uid) if (s.modality or "MR") == "MR"]
    if not found:
        raise AppError(
            f"The DICOMweb server has no MR series in study {study_uid}.",
            code="remote_study_not_found",
            status_code=404,
        )
    sagittal = []
    for s in found:
        if is_sagittal(await client.orientation(study_uid, s.uid)):
            sagittal.append(s)
    if not sagittal:
        raise AppError(
            "No series of the remote study is sagittal.", code="not_sagittal", status_code=422
        )
    return max(sagittal, key=lambda s: s.instances).uid


async def pull(
    session: AsyncSession,
    runtime: Runtime,
    executor: JobExecutor,
    principal: Principal,
    request: PullRequest,
) -> StudyPublic:
    """Fetch the study's sagittal series from the DICOMweb server and analyse it."""
    client = client_for(runtime)
    try:
        series_uid = request.series_uid or await _sagittal_series(client, request.study_uid)
        instances = await client.retrieve_series(request.study_uid, series_uid)
    except DicomwebError as exc:
        status = 404 if exc.code == "remote_not_found" else 502
        code = "remote_study_not_found" if exc.code == "remote_not_found" else exc.code
        raise AppError(exc.message, code=code, status_code=status) from exc
    finally:
        await client.aclose()
    if len(instances) > runtime.settings.study_max_instances:
        raise AppError(
            f"The remote series has {len(instances)} instances; at most "
            f"{runtime.settings.study_max_instances} can be analysed.",
            code="too_many_instances",
            status_code=413,
        )
    files = [IncomingFile(f"{i:04d}.dcm", io.BytesIO(b)) for i, b in enumerate(instances)]
    options = StudyOptions(
        models=request.models,
        explain=request.explain,
        allow_out_of_domain=request.allow_out_of_domain,
        push=bool(request.push) if request.push is not None else runtime.settings.dicomweb_push,
    )
    study, _ = await submit_study(session, runtime, executor, principal, files, options)
    return study


# ----------------------------------------------------------------------------- push


async def _record(runtime: Runtime, study_id: uuid.UUID, push: dict[str, Any]) -> None:
    async with runtime.sessionmaker() as session:
        push["at"] = (await jobs_repo.database_now(session)).isoformat()
        await studies_repo.set_push(session, study_id, push)
        await session.commit()


async def push(runtime: Runtime, study_id: uuid.UUID) -> dict[str, Any]:
    """STOW-RS the study's DICOM objects to the configured server; record the outcome."""
    import pydicom

    from backend.services.exports import dicom_objects

    server = runtime.settings.dicomweb_url
    state: dict[str, Any] = {"status": "failed", "server": server, "objects": []}
    try:
        async with runtime.sessionmaker() as session:
            row = await analyses_repo.get_analysis(session, study_id)
        if row is None:
            raise AppError("The study has no stored result.", code="study_not_done")
        objects = await asyncio.to_thread(dicom_objects, runtime.store, row, "dicom")
        client = client_for(runtime)
        try:
            await client.store([body for _, body in objects])
        finally:
            await client.aclose()
        state["objects"] = [
            str(pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True).SOPInstanceUID)
            for _, body in objects
        ]
        state["status"] = "done"
    except (AppError, DicomwebError) as exc:
        state["message"] = f"{exc.code}: {exc.message}"
        log.warning("push of study %s failed: %s", study_id, exc.code)
    except Exception as exc:  # noqa: BLE001 - a failed push must not fail the stored study
        from backend.interop.dicom_out import ExportError

        state["message"] = (
            f"{exc.code}: {exc.message}" if isinstance(exc, ExportError) else "internal error"
        )
        log.exception("push of study %s failed", study_id)
    await _record(runtime, study_id, state)
    return state
