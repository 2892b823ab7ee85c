"""Job results export: the whole job as JSON (each item's stored analysis) or as CSV."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from backend.repositories import analyses as analyses_repo
from backend.schemas.jobs import JobResultItem, JobResults, JobSummary
from backend.services.auth import Principal
from backend.services.jobs import get_job

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
CSV_TAIL = [
    "roi_x1",
    "roi_y1",
    "roi_x2",
    "roi_y2",
    "mask_fraction",
    "in_domain",
    "withheld",
    "research_use_only",
]


async def results_json(
    session: AsyncSession, principal: Principal, job_id: uuid.UUID
) -> JobResults:
    """The job and each item's full stored analysis (or error)."""
    job = await get_job(session, principal, job_id)
    stored = await analyses_repo.results_by_ids(
        session, [i.analysis_id for i in job.items if i.analysis_id]
    )
    items = [
        JobResultItem(
            **i.model_dump(), analysis=stored.get(i.analysis_id) if i.analysis_id else None
        )
        for i in job.items
    ]
    summary = JobSummary(**job.model_dump(exclude={"items"}))
    return JobResults(job=summary, items=items)


# A cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def safe_cell(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula, prefixed with ' so it stays text.

    Numbers are left alone: a negative number is data, not a formula.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


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
    writer.writerow([safe_cell(h) for h in header])
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
        in_domain = summary.get("in_domain")
        withheld = summary.get("withheld")
        row += [
            seg.get("mask_fraction", ""),
            "" if in_domain is None else str(in_domain).lower(),
            "" if withheld is None else str(withheld).lower(),
            "true",
        ]
        writer.writerow([safe_cell(v) for v in row])
    return buf.getvalue()
