"""Storing one result: its files first (one atomic folder rename), then its rows and audit event.

Any error before the commit leaves neither files nor rows behind (house rule 8).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.config import Settings
from backend.core.errors import AppError
from backend.inference import mappers
from backend.inference.registry import ModelEntry
from backend.interop.sources import SOURCES_FILE
from backend.models import Analysis, ModelResult
from backend.repositories import analyses as analyses_repo
from backend.repositories import audit
from backend.repositories import jobs as jobs_repo
from backend.schemas.results import ClassificationOutput, ResultBase, SegmentationOutput
from backend.services.atomic import files_then_rows
from backend.services.auth import Principal
from backend.services.pipeline import Decoded
from backend.storage.artifacts import ArtifactStore


def headline(classifications: list[ClassificationOutput]) -> dict[str, Any]:
    """The first classifier's answer, kept in columns for listing and filtering history."""
    if not classifications:
        return {}
    first = classifications[0]
    return {
        "as_status": first.as_status,
        "as_confidence": first.as_probability,
        "stage": first.stage,
        "stage_confidence": first.stage_probability,
    }


def model_rows(
    segmentation: SegmentationOutput | None,
    classifications: list[ClassificationOutput],
    others: list[ModelEntry],
) -> list[ModelResult]:
    """One row per model used (history filters by model), each model once."""
    rows: list[ModelResult] = []
    seen: set[str] = set()
    if segmentation is not None:
        m = segmentation.model
        rows.append(ModelResult(model_key=m.key, model_version=m.version, task="segmentation"))
        seen.add(m.key)
    for c in classifications:
        rows.append(
            ModelResult(
                model_key=c.model.key,
                model_version=c.model.version,
                task="classification",
                as_status=c.as_status,
                as_confidence=c.as_probability,
                stage=c.stage,
                stage_confidence=c.stage_probability,
            )
        )
        seen.add(c.model.key)
    for e in others:
        if e.key not in seen:
            rows.append(ModelResult(model_key=e.key, model_version=e.version, task=e.task))
            seen.add(e.key)
    return rows


async def _clear_leftovers(
    session: AsyncSession, store: ArtifactStore, analysis_id: uuid.UUID, job_id: str | None
) -> None:
    if await asyncio.to_thread(store.exists, analysis_id) and (
        await analyses_repo.get_analysis(session, analysis_id) is None
    ):
        # Files without a row: left by a crash between the rename and the commit (a job item
        # being retried). They are ours to replace.
        await asyncio.to_thread(store.delete, analysis_id)
    if job_id is not None:
        # A job item's id is fixed and claimed by one worker at a time: staging folders under it
        # are an earlier attempt's, whose worker died before its rename.
        await asyncio.to_thread(store.discard_staged, analysis_id)


def _row(
    stored_bytes: int,
    principal: Principal,
    result: ResultBase,
    *,
    kind: str,
    decoded: Decoded,
    used: list[ModelEntry],
    headline_values: dict[str, Any],
    job_id: str | None,
) -> Analysis:
    return Analysis(
        id=result.id,
        user_id=principal.user_id,
        kind=kind,
        created_at=result.created_at,
        image_path="input.png",
        image_format=decoded.format,
        input_sha256=decoded.sha256,
        original_filename=result.image.filename,
        stored_bytes=stored_bytes,
        models=[e.key for e in used],
        model_versions={e.key: e.version for e in used},
        label_provenance={e.key: e.label_provenance.model_dump(mode="json") for e in used},
        timings=result.timings_ms,
        result=result.model_dump(mode="json"),
        job_id=job_id,
        **headline_values,
    )


async def check_quota(
    session: AsyncSession, settings: Settings, principal: Principal, adding: int
) -> None:
    """Refuse (413) what would take the user past their storage quota."""
    used = await analyses_repo.stored_bytes_of(session, principal.user_id)
    used += await jobs_repo.open_input_bytes_of(session, principal.user_id)
    quota = settings.storage_quota_bytes
    if used + adding > quota:
        raise AppError(
            f"Your stored results use {used / 2**20:.1f} of your {quota / 2**20:.0f} MiB; "
            "delete some from your history first.",
            code="storage_quota_exceeded",
            status_code=413,
        )


async def store_result(
    session: AsyncSession,
    store: ArtifactStore,
    settings: Settings,
    principal: Principal,
    result: ResultBase,
    *,
    kind: str,
    decoded: Decoded,
    files: dict[str, bytes],
    used: list[ModelEntry],
    rows: list[ModelResult],
    headline_values: dict[str, Any],
    job_id: str | None,
) -> None:
    """Files first (atomic folder rename), then rows and audit event in one transaction."""
    analysis_id = result.id
    files = {"input.png": decoded.display_png or mappers.png(decoded.display), **files}
    if decoded.sources is not None:
        files[SOURCES_FILE] = decoded.sources
    stored_bytes = sum(len(data) for data in files.values())
    await check_quota(session, settings, principal, stored_bytes)
    await _clear_leftovers(session, store, analysis_id, job_id)
    staged = store.stage(analysis_id)
    async with files_then_rows(session, staged):

        def write() -> None:
            staged.add_all(files)
            staged.commit()

        await asyncio.to_thread(write)
        row = _row(
            stored_bytes,
            principal,
            result,
            kind=kind,
            decoded=decoded,
            used=used,
            headline_values=headline_values,
            job_id=job_id,
        )
        await analyses_repo.add_analysis(session, row, rows)
        await audit.record(
            session,
            action=f"inference.{kind}",
            actor=principal.actor,
            user_id=principal.user_id,
            target=str(analysis_id),
            detail={
                "models": {e.key: e.version for e in used},
                "input_sha256": decoded.sha256,
                "format": decoded.format,
                **({"job_id": job_id} if job_id else {}),
            },
        )
