"""Batch-job use cases: create, read, list, cancel, export, and process one item.

A job is a set of uploaded files analysed with the same options. Its files are stored in the
job input store (atomically, before any row exists), its rows are committed, and only then is
each item handed to the job executor: the embedded one (asyncio tasks in the API process) or
Celery workers. Either way an item is processed by :func:`process_item`, which

* claims the item with one conditional UPDATE (queued, or running under a lapsed lease), so a
  redelivered task never runs an item another live worker holds;
* renews the lease while it works, so a killed worker's items are taken over once it lapses;
* runs the same use case as ``POST /analyses`` (:func:`backend.services.analysis.run_analysis`)
  with an analysis id derived from (job, index), so at most one analysis can ever exist per item
  however often the broker delivers it; a retry after a crash finds that analysis and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO, Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.config import Settings
from backend.core.errors import AppError, BadInput, NotFound, NotReady, ServiceBusy
from backend.db.base import utcnow
from backend.models import Analysis, Job, JobItem, User
from backend.models.job import (
    ITEM_CANCELLED,
    ITEM_DONE,
    ITEM_FAILED,
    ITEM_QUEUED,
    ITEM_RUNNING,
    ITEM_TERMINAL,
)
from backend.repositories import audit
from backend.repositories import jobs as jobs_repo
from backend.schemas.jobs import (
    ItemError,
    JobItemPublic,
    JobOptions,
    JobPage,
    JobProgress,
    JobPublic,
    JobResultItem,
    JobResults,
    JobSummary,
)
from backend.services.analysis import (
    AnalysisContext,
    AnalysisOptions,
    Upload,
    run_analysis,
    split_keys,
)
from backend.services.auth import Principal
from backend.storage.job_inputs import JobInputStore, StagedInputs, TooLarge

log = logging.getLogger(__name__)

# Analysis ids of job items are uuid5(ITEM_NAMESPACE, "<job id>/<index>").
ITEM_NAMESPACE = uuid.UUID("6d1f3c8e-5b0a-4f5e-9a57-3d1c2b7e9f10")
# An item whose processing hits an unexpected store error this often is failed, not retried.
MAX_ATTEMPTS = 5
_ZIP_MAGIC = b"PK\x03\x04"


def item_analysis_id(job_id: uuid.UUID, index: int) -> uuid.UUID:
    """The id the analysis of item ``index`` of ``job_id`` gets, on every attempt."""
    return uuid.uuid5(ITEM_NAMESPACE, f"{job_id}/{index}")


class JobExecutor(Protocol):
    """Where items run: in the API process (embedded) or on Celery workers."""

    name: str

    async def submit(self, job_id: uuid.UUID, indexes: list[int]) -> None:
        """Hand these items of a committed job to the workers."""


@dataclass
class IncomingFile:
    """One uploaded file: a name the client gave (never trusted for format) and a binary stream."""

    filename: str | None
    stream: IO[bytes]


@dataclass
class _Staged:
    index: int
    filename: str | None
    input_name: str | None = None
    sha256: str | None = None
    size: int = 0
    error: tuple[str, str] | None = None


@dataclass
class ItemOutcome:
    """What :func:`process_item` did; ``retry`` asks the executor to try again later."""

    status: str  # done | failed | skipped | retry
    retry_in: float = 0.0
    detail: str = ""


def job_inputs(settings: Settings) -> JobInputStore:
    return JobInputStore.for_artifacts(settings.artifacts_dir)


# ----------------------------------------------------------------------------- public shapes


def _progress(total: int, counts: dict[str, int]) -> JobProgress:
    done, failed, cancelled = (counts.get(s, 0) for s in (ITEM_DONE, ITEM_FAILED, ITEM_CANCELLED))
    finished = done + failed + cancelled
    return JobProgress(
        total=total,
        done=done,
        failed=failed,
        cancelled=cancelled,
        queued=counts.get(ITEM_QUEUED, 0),
        running=counts.get(ITEM_RUNNING, 0),
        finished=finished,
        percent=round(100.0 * finished / total, 1) if total else 100.0,
    )


def job_status(job: Job, counts: dict[str, int]) -> str:
    """The job's state from its items (the stored column can lag a moment behind)."""
    if job.cancelled_at is not None:
        return "cancelled"
    open_items = counts.get(ITEM_QUEUED, 0) + counts.get(ITEM_RUNNING, 0)
    if open_items == 0:
        return "completed"
    started = sum(counts.get(s, 0) for s in (ITEM_RUNNING, ITEM_DONE, ITEM_FAILED))
    return "running" if started else "queued"


def _summary(job: Job, counts: dict[str, int]) -> JobSummary:
    return JobSummary(
        id=job.id,
        status=job_status(job, counts),  # type: ignore[arg-type]
        backend=job.backend,  # type: ignore[arg-type]
        options=JobOptions(**job.options),
        progress=_progress(job.total, counts),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        cancelled_at=job.cancelled_at,
        results_csv_url=f"/jobs/{job.id}/results.csv",
        results_json_url=f"/jobs/{job.id}/results.json",
    )


def _item_public(item: JobItem) -> JobItemPublic:
    return JobItemPublic(
        index=item.index,
        filename=item.filename,
        input_sha256=item.input_sha256,
        size_bytes=item.size_bytes,
        status=item.status,  # type: ignore[arg-type]
        attempts=item.attempts,
        error=ItemError(code=item.error_code, message=item.error_message or "")
        if item.error_code
        else None,
        analysis_id=item.analysis_id,
        result_url=f"/history/{item.analysis_id}" if item.analysis_id else None,
        result=item.summary,
        started_at=item.started_at,
        finished_at=item.finished_at,
    )


def summarize_result(result: dict[str, Any]) -> dict[str, Any]:
    """The per-model outcome of a stored analysis, small enough to list for every item."""
    seg = result.get("segmentation")
    return {
        "classifications": [
            {
                "model": c["model"]["key"],
                "version": c["model"]["version"],
                "as_status": c["as_status"],
                "as_probability": c["as_probability"],
                "p_positive": (c.get("as_probabilities") or {}).get("positive"),
                "stage": c["stage"],
                "stage_probability": c["stage_probability"],
            }
            for c in result.get("classifications") or []
        ],
        "segmentation": {
            "model": seg["model"]["key"],
            "roi": seg.get("roi"),
            "mask_fraction": seg.get("mask_fraction"),
        }
        if seg
        else None,
        "explanations": [
            {
                "model": e["model"]["key"],
                "class_label": e.get("class_label"),
                "inside_fraction": e.get("inside_fraction"),
                "faithfulness_score": (e.get("faithfulness") or {}).get("score"),
            }
            for e in result.get("explanations") or []
        ],
    }


# ----------------------------------------------------------------------------- create


def _is_zip(stream: IO[bytes]) -> bool:
    stream.seek(0)
    head = stream.read(4)
    stream.seek(0)
    return head == _ZIP_MAGIC and zipfile.is_zipfile(stream)


def _clean_name(name: str | None) -> str | None:
    return str(name)[-255:] if name else None


def _zip_members(stream: IO[bytes]) -> Iterator[zipfile.ZipInfo]:
    try:
        archive = zipfile.ZipFile(stream)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BadInput("The zip archive cannot be read.", code="bad_archive") from exc
    for info in infos:
        base = info.filename.rsplit("/", 1)[-1]
        if info.is_dir() or not base or base.startswith(".") or "__MACOSX/" in info.filename:
            continue
        yield info


def _stage_files(
    staged: StagedInputs, files: list[IncomingFile], settings: Settings
) -> list[_Staged]:
    """Copy every file (or every member of one zip) into the staging folder.

    Files that are too large or empty become failed items at once; the job as a whole is
    refused only when it has too many items or bytes.
    """
    limit = settings.max_upload_bytes
    out: list[_Staged] = []
    total_bytes = 0

    def too_many() -> AppError:
        return AppError(
            f"A job can hold at most {settings.job_max_items} files.",
            code="too_many_items",
            status_code=413,
        )

    def account(size: int) -> None:
        nonlocal total_bytes
        total_bytes += size
        if total_bytes > settings.job_max_bytes:
            raise AppError(
                f"The files of one job may total at most {settings.job_max_bytes // 1024**2} MiB.",
                code="job_too_large",
                status_code=413,
            )

    def add(item: _Staged, stream: IO[bytes]) -> None:
        try:
            item.input_name, item.sha256, item.size = staged.add_stream(item.index, stream, limit)
        except TooLarge:
            item.error = ("too_large", f"The file is larger than the {limit // 1024**2} MiB limit.")
            item.size = limit + 1
            return
        account(item.size)
        if item.size == 0:
            item.error = ("empty_image", "The file is empty (0 bytes).")

    if len(files) == 1 and _is_zip(files[0].stream):
        archive = zipfile.ZipFile(files[0].stream)
        members = list(_zip_members(files[0].stream))
        if len(members) > settings.job_max_items:
            raise too_many()
        for index, info in enumerate(members):
            item = _Staged(index=index, filename=_clean_name(info.filename))
            out.append(item)
            if info.flag_bits & 0x1:
                item.error = ("unsupported_format", "Encrypted archive members cannot be read.")
            elif info.file_size > limit:
                item.error = (
                    "too_large",
                    f"The file is larger than the {limit // 1024**2} MiB limit.",
                )
                item.size = info.file_size
            else:
                try:
                    with archive.open(info) as member:
                        add(item, member)
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError):
                    item.error = ("corrupt_archive", "This archive member cannot be extracted.")
        if not out:
            raise BadInput("The zip archive holds no files.", code="no_files")
        return out

    if len(files) > settings.job_max_items:
        raise too_many()
    for index, incoming in enumerate(files):
        item = _Staged(index=index, filename=_clean_name(incoming.filename))
        out.append(item)
        incoming.stream.seek(0)
        add(item, incoming.stream)
    return out


async def create_job(
    session: AsyncSession,
    runtime: Any,
    executor: JobExecutor,
    principal: Principal,
    files: list[IncomingFile],
    *,
    models: list[str] | None = None,
    segmentation_model: str | None = None,
    explain: bool = True,
    method: str = "gradcam",
    faithfulness: bool = True,
) -> JobPublic:
    """Store the files, record the job, hand its items to the executor; returns at once."""
    settings: Settings = runtime.settings
    registry = runtime.registry
    if registry is None:
        raise NotReady("The models are still loading; retry in a moment.")
    if not files:
        raise BadInput("Upload one or more files (field 'files'), or one zip.", code="no_files")
    classifiers = registry.resolve(
        split_keys(models), "classification", limit=settings.max_models_per_request
    )
    seg = (
        registry.resolve([segmentation_model], "segmentation")[0]
        if segmentation_model
        else registry.default_for("segmentation")
    )
    options = JobOptions(
        models=[e.key for e in classifiers],
        segmentation_model=seg.key if seg is not None else None,
        explain=explain,
        method=method,  # type: ignore[arg-type]
        faithfulness=faithfulness,
    )

    job_id = uuid.uuid4()
    store = job_inputs(settings)
    staged = store.stage(job_id)
    committed = False
    try:
        staged_items = await asyncio.to_thread(_stage_files, staged, files, settings)
        await asyncio.to_thread(staged.commit)
        now = utcnow()
        items = [
            JobItem(
                index=s.index,
                filename=s.filename,
                input_name=s.input_name if s.error is None else None,
                input_sha256=s.sha256,
                size_bytes=s.size,
                status=ITEM_FAILED if s.error else ITEM_QUEUED,
                attempts=0,
                error_code=s.error[0] if s.error else None,
                error_message=s.error[1] if s.error else None,
                finished_at=now if s.error else None,
            )
            for s in staged_items
        ]
        job = Job(
            id=job_id,
            user_id=principal.user_id,
            api_key_id=principal.api_key_id,
            status="queued",
            backend=executor.name,
            options=options.model_dump(mode="json"),
            total=len(items),
            created_at=now,
        )
        await jobs_repo.add_job(session, job, items)
        await audit.record(
            session,
            action="job.create",
            actor=principal.actor,
            user_id=principal.user_id,
            target=str(job_id),
            detail={"items": len(items), "backend": executor.name, "models": options.models},
        )
        await session.commit()
        committed = True
    finally:
        if not committed:
            await session.rollback()
            await asyncio.to_thread(staged.discard)

    queued = [i.index for i in items if i.status == ITEM_QUEUED]
    if queued:
        try:
            await executor.submit(job_id, queued)
        except Exception as exc:
            log.exception("could not enqueue job %s", job_id)
            # Nothing of the job may stay behind: rows and files go, the client retries.
            await session.delete(job)
            await session.commit()
            await asyncio.to_thread(store.delete, job_id)
            raise AppError(
                "The job queue is not reachable; retry in a moment.",
                code="queue_unavailable",
                status_code=503,
                headers={"Retry-After": "5"},
            ) from exc
    else:
        await _finalize(session, store, job_id)
    return await get_job(session, principal, job_id)


# ----------------------------------------------------------------------------- read, cancel


async def _owned(session: AsyncSession, principal: Principal, job_id: uuid.UUID) -> Job:
    job = await jobs_repo.get_job_for(session, job_id, principal.user_id, admin=principal.is_admin)
    if job is None:
        raise NotFound("No such job.", code="job_not_found")
    return job


async def get_job(session: AsyncSession, principal: Principal, job_id: uuid.UUID) -> JobPublic:
    """The job with every item's status and result or error (owner or admin only)."""
    job = await _owned(session, principal, job_id)
    # Fresh values: workers change items behind this session's back.
    await session.refresh(job)
    items = await jobs_repo.list_items(session, job_id)
    counts: dict[str, int] = {}
    for item in items:
        counts[item.status] = counts.get(item.status, 0) + 1
    return JobPublic(**_summary(job, counts).model_dump(), items=[_item_public(i) for i in items])


async def list_jobs(
    session: AsyncSession,
    principal: Principal,
    *,
    limit: int = 20,
    offset: int = 0,
    status: str | None = None,
) -> JobPage:
    """The caller's own jobs, newest first."""
    rows, total = await jobs_repo.list_jobs(
        session, principal.user_id, limit=limit, offset=offset, status=status
    )
    counts = await jobs_repo.item_counts(session, [j.id for j in rows])
    return JobPage(
        items=[_summary(j, counts[j.id]) for j in rows], total=total, limit=limit, offset=offset
    )


async def _finalize(session: AsyncSession, store: JobInputStore, job_id: uuid.UUID) -> bool:
    """Close the job when no item is open; its stored inputs are not needed any more."""
    if await jobs_repo.unfinished_count(session, job_id):
        return False
    job = await jobs_repo.get_job(session, job_id)
    if job is None:
        return False
    await session.refresh(job)
    status = "cancelled" if job.cancelled_at is not None else "completed"
    won = await jobs_repo.finalize(session, job_id, status, utcnow())
    await session.commit()
    if won:
        await asyncio.to_thread(store.delete, job_id)
    return won


async def cancel_job(
    session: AsyncSession, settings: Settings, principal: Principal, job_id: uuid.UUID
) -> JobPublic:
    """Stop the job: items not started are cancelled; items running now finish."""
    job = await _owned(session, principal, job_id)
    if job.finished_at is None and job.cancelled_at is None:
        now = utcnow()
        job.cancelled_at = now
        job.status = "cancelled"
        n = await jobs_repo.cancel_queued(session, job_id, now)
        await audit.record(
            session,
            action="job.cancel",
            actor=principal.actor,
            user_id=principal.user_id,
            target=str(job_id),
            detail={"cancelled_items": n},
        )
        await session.commit()
        await _finalize(session, job_inputs(settings), job_id)
    return await get_job(session, principal, job_id)


# ----------------------------------------------------------------------------- export

CSV_BASE = [
    "job_id",
    "index",
    "filename",
    "input_sha256",
    "status",
    "error_code",
    "error_message",
    "analysis_id",
]
CSV_MODEL = ["as_status", "p_positive", "as_probability", "stage", "stage_probability"]
CSV_TAIL = ["roi_x1", "roi_y1", "roi_x2", "roi_y2", "mask_fraction", "research_use_only"]


async def results_json(
    session: AsyncSession, principal: Principal, job_id: uuid.UUID
) -> JobResults:
    """The job and each item's full stored analysis (or error)."""
    job = await get_job(session, principal, job_id)
    ids = [i.analysis_id for i in job.items if i.analysis_id]
    stored: dict[uuid.UUID, dict[str, Any]] = {}
    if ids:
        rows = await session.execute(
            select(Analysis.id, Analysis.result).where(Analysis.id.in_(ids))
        )
        stored = {r[0]: r[1] for r in rows}
    items = [
        JobResultItem(
            **i.model_dump(), analysis=stored.get(i.analysis_id) if i.analysis_id else None
        )
        for i in job.items
    ]
    summary = JobSummary(**job.model_dump(exclude={"items"}))
    return JobResults(job=summary, items=items)


async def results_csv(session: AsyncSession, principal: Principal, job_id: uuid.UUID) -> str:
    """One row per item: status, error code, and per model AS status and stage."""
    job = await get_job(session, principal, job_id)
    models = job.options.models
    header = list(CSV_BASE)
    for key in models:
        header += [f"{key}.{c}" for c in CSV_MODEL]
        if job.options.explain:
            header.append(f"{key}.faithfulness_score")
    header += CSV_TAIL
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for item in job.items:
        row: list[Any] = [
            job.id,
            item.index,
            item.filename or "",
            item.input_sha256 or "",
            item.status,
            item.error.code if item.error else "",
            item.error.message if item.error else "",
            item.analysis_id or "",
        ]
        summary = item.result or {}
        by_model = {c["model"]: c for c in summary.get("classifications") or []}
        faith = {e["model"]: e for e in summary.get("explanations") or []}
        for key in models:
            c = by_model.get(key) or {}
            row += [c.get(name, "") for name in CSV_MODEL]
            if job.options.explain:
                score = (faith.get(key) or {}).get("faithfulness_score")
                row.append("" if score is None else score)
        seg = summary.get("segmentation") or {}
        roi = seg.get("roi") or {}
        row += [roi.get("x1", ""), roi.get("y1", ""), roi.get("x2", ""), roi.get("y2", "")]
        row += [seg.get("mask_fraction", ""), "true"]
        writer.writerow(row)
    return buf.getvalue()


# ----------------------------------------------------------------------------- processing


@dataclass
class _Claimed:
    job_id: uuid.UUID
    index: int
    item_id: int
    attempt: int
    filename: str | None
    input_name: str | None
    options: dict[str, Any]
    principal: Principal
    analysis_id: uuid.UUID = field(init=False)

    def __post_init__(self) -> None:
        self.analysis_id = item_analysis_id(self.job_id, self.index)


async def _claim(
    runtime: Any, job_id: uuid.UUID, index: int, worker: str
) -> _Claimed | ItemOutcome:
    lease = runtime.settings.job_lease_seconds
    async with runtime.sessionmaker() as session:
        item = await jobs_repo.get_item(session, job_id, index)
        job = await jobs_repo.get_job(session, job_id) if item is not None else None
        if item is None or job is None:
            return ItemOutcome("skipped", detail="no such item (job deleted?)")
        if item.status in ITEM_TERMINAL:
            return ItemOutcome("skipped", detail=f"already {item.status}")
        if job.cancelled_at is not None:
            await jobs_repo.cancel_queued(session, job_id, utcnow())
            await session.commit()
            await _finalize(session, job_inputs(runtime.settings), job_id)
            return ItemOutcome("skipped", detail="job cancelled")
        now = utcnow()
        if not await jobs_repo.claim_item(
            session, item.id, worker, now, now + timedelta(seconds=lease)
        ):
            await session.rollback()
            await session.refresh(item)
            if item.status == ITEM_RUNNING and item.lease_until is not None:
                # Another live worker holds it. Look again once its lease could have lapsed,
                # in case that worker dies before finishing.
                wait = (item.lease_until - utcnow()).total_seconds() + 0.5
                return ItemOutcome(
                    "retry",
                    retry_in=max(1.0, min(wait, lease + 1.0)),
                    detail=f"held by {item.worker}",
                )
            return ItemOutcome("skipped", detail=f"already {item.status}")
        await jobs_repo.mark_started(session, job_id, now)
        await session.commit()
        user = await session.get(User, job.user_id)
        if user is None:
            return ItemOutcome("skipped", detail="owner gone")
        return _Claimed(
            job_id=job_id,
            index=index,
            item_id=item.id,
            attempt=item.attempts + 1,
            filename=item.filename,
            input_name=item.input_name,
            options=dict(job.options),
            principal=Principal(user=user, api_key_id=job.api_key_id),
        )


async def _heartbeat(runtime: Any, item_id: int, worker: str) -> None:
    lease = runtime.settings.job_lease_seconds
    while True:
        await asyncio.sleep(lease / 3.0)
        try:
            async with runtime.sessionmaker() as session:
                ok = await jobs_repo.renew_lease(
                    session, item_id, worker, utcnow() + timedelta(seconds=lease)
                )
                await session.commit()
        except Exception:  # noqa: BLE001 - a missed renewal is retried; the lease is generous
            log.warning("could not renew the lease of job item %s", item_id, exc_info=True)
            continue
        if not ok:
            return


async def _finish(
    runtime: Any, c: _Claimed, worker: str, status: str, **values: Any
) -> ItemOutcome:
    async with runtime.sessionmaker() as session:
        mine = await jobs_repo.finish_item(
            session, c.item_id, worker, status=status, now=utcnow(), **values
        )
        await session.commit()
    if not mine:
        return ItemOutcome("skipped", detail="lost the claim to another worker")
    return ItemOutcome(status, detail=values.get("error_code") or "")


async def _release(runtime: Any, c: _Claimed, worker: str) -> None:
    async with runtime.sessionmaker() as session:
        await jobs_repo.release_item(session, c.item_id, worker)
        await session.commit()


async def _stored_analysis(runtime: Any, analysis_id: uuid.UUID) -> dict[str, Any] | None:
    async with runtime.sessionmaker() as session:
        row = await session.get(Analysis, analysis_id)
        return dict(row.result) if row is not None else None


async def _execute(runtime: Any, c: _Claimed, worker: str) -> ItemOutcome:
    settings: Settings = runtime.settings
    aid = c.analysis_id
    previous = await _stored_analysis(runtime, aid)
    if previous is not None:
        # An earlier attempt stored the analysis and died before recording it here.
        return await _finish(
            runtime, c, worker, ITEM_DONE, analysis_id=aid, summary=summarize_result(previous)
        )
    if await asyncio.to_thread(runtime.store.exists, aid):
        # Files of an attempt that died between writing them and committing its row.
        await asyncio.to_thread(runtime.store.delete, aid)
    data = (
        await asyncio.to_thread(job_inputs(settings).read, c.job_id, c.input_name)
        if c.input_name
        else None
    )
    if data is None:
        return await _finish(
            runtime,
            c,
            worker,
            ITEM_FAILED,
            error_code="input_missing",
            error_message="The uploaded file of this item is no longer stored.",
        )
    opts = c.options
    options = AnalysisOptions(
        models=list(opts.get("models") or []) or None,
        segmentation_model=opts.get("segmentation_model"),
        explain=bool(opts.get("explain", True)),
        method=str(opts.get("method", "gradcam")),
        faithfulness=bool(opts.get("faithfulness", True)),
    )
    async with runtime.sessionmaker() as session:
        ctx = AnalysisContext.from_runtime(runtime, session)
        try:
            result = await run_analysis(
                ctx,
                c.principal,
                Upload(data=data, filename=c.filename),
                options,
                analysis_id=aid,
                job_id=str(c.job_id),
            )
        except (ServiceBusy, NotReady) as exc:
            await _release(runtime, c, worker)
            retry = float((exc.headers or {}).get("Retry-After", 2))
            return ItemOutcome("retry", retry_in=retry, detail=exc.code)
        except AppError as exc:
            return await _finish(
                runtime, c, worker, ITEM_FAILED, error_code=exc.code, error_message=exc.message
            )
        except (DBAPIError, OSError) as exc:
            stored = await _stored_analysis(runtime, aid)
            if stored is not None:  # a duplicate delivery raced us and won: same item, done
                return await _finish(
                    runtime, c, worker, ITEM_DONE, analysis_id=aid, summary=summarize_result(stored)
                )
            if c.attempt < MAX_ATTEMPTS:
                log.warning("job item %s/%s: store error, will retry: %s", c.job_id, c.index, exc)
                await _release(runtime, c, worker)
                return ItemOutcome("retry", retry_in=2.0 * c.attempt, detail="store_error")
            log.exception("job item %s/%s failed %d times", c.job_id, c.index, c.attempt)
            return await _finish(
                runtime,
                c,
                worker,
                ITEM_FAILED,
                error_code="internal_error",
                error_message="The item could not be stored; the error has been logged.",
            )
        except Exception:
            log.exception("job item %s/%s failed", c.job_id, c.index)
            return await _finish(
                runtime,
                c,
                worker,
                ITEM_FAILED,
                error_code="internal_error",
                error_message="The item could not be analysed; the error has been logged.",
            )
    return await _finish(
        runtime,
        c,
        worker,
        ITEM_DONE,
        analysis_id=aid,
        summary=summarize_result(result.model_dump(mode="json")),
    )


async def process_item(runtime: Any, job_id: uuid.UUID, index: int, worker: str) -> ItemOutcome:
    """Run one item of a job, at most once to completion however often it is delivered.

    ``runtime`` is the process' :class:`backend.services.runtime.Runtime` (warm models, store,
    database); ``worker`` names this process for the claim.
    """
    claimed = await _claim(runtime, job_id, index, worker)
    if isinstance(claimed, ItemOutcome):
        return claimed
    beat = asyncio.create_task(_heartbeat(runtime, claimed.item_id, worker))
    try:
        outcome = await _execute(runtime, claimed, worker)
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
    if outcome.status in (ITEM_DONE, ITEM_FAILED):
        async with runtime.sessionmaker() as session:
            await _finalize(session, job_inputs(runtime.settings), job_id)
    return outcome


@contextlib.asynccontextmanager
async def job_executor_lifespan(app: Any) -> AsyncIterator[None]:
    """Run the configured job executor (embedded or Celery) for the app's lifetime.

    The executors live in ``backend.worker`` (they import this module, hence the late import);
    routes reach them only through this service.
    """
    from backend.worker.backends import job_executor_lifespan as executor_lifespan

    async with executor_lifespan(app):
        yield
