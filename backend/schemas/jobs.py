"""Batch jobs: what POST /jobs returns, progress, per-item outcomes, pages of jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from backend.schemas.common import RESEARCH_NOTICE
from ml.vocab import CamMethod

JobStatus = Literal["queued", "running", "completed", "cancelled"]
JobKind = Literal["batch", "study"]
ItemStatus = Literal["queued", "running", "done", "failed", "cancelled"]


class JobOptions(BaseModel):
    """How every item of the job is analysed (the options of POST /analyses)."""

    models: list[str] = Field(description="classifier keys, resolved when the job was created")
    segmentation_model: str | None = None
    explain: bool = True
    method: CamMethod | None = Field(
        default=None, description="None: each model's measured best method (its default_method)"
    )
    faithfulness: bool = True
    allow_out_of_domain: bool = False


class JobProgress(BaseModel):
    total: int
    done: int = Field(description="items analysed (each one an analysis in your history)")
    failed: int = Field(description="items that could not be analysed (see their error code)")
    cancelled: int = 0
    queued: int = 0
    running: int = 0
    finished: int = Field(description="done + failed + cancelled")
    percent: float


class ItemError(BaseModel):
    code: str = Field(description="machine-readable, e.g. unsupported_format, corrupt_image")
    message: str


class JobItemPublic(BaseModel):
    index: int = Field(description="position in the upload (zip: archive order)")
    filename: str | None = None
    input_sha256: str | None = None
    size_bytes: int
    status: ItemStatus
    attempts: int = Field(description="times a worker started it (more than 1 after a takeover)")
    error: ItemError | None = None
    analysis_id: uuid.UUID | None = None
    result_url: str | None = Field(default=None, description="the analysis in history")
    result: dict[str, Any] | None = Field(
        default=None, description="per-model outcome; the full result is at result_url"
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobSummary(BaseModel):
    id: uuid.UUID
    kind: JobKind = Field(
        default="batch", description="study: one whole series, followed at /studies/{study_id}"
    )
    study_id: uuid.UUID | None = Field(default=None, description="the study of a study job")
    status: JobStatus
    backend: Literal["embedded", "celery"]
    options: JobOptions
    progress: JobProgress
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancelled_at: datetime | None = None
    results_csv_url: str
    results_json_url: str
    research_use_only: Literal[True] = True
    notice: str = RESEARCH_NOTICE


class JobPublic(JobSummary):
    """A job with every item's status, error code or result."""

    items: list[JobItemPublic]


class JobPage(BaseModel):
    items: list[JobSummary]
    total: int
    limit: int
    offset: int


class JobResultItem(JobItemPublic):
    analysis: dict[str, Any] | None = Field(
        default=None, description="the stored analysis, exactly as history returns it"
    )


class JobResults(BaseModel):
    """results.json: the job and, for each item, its full stored analysis or its error."""

    job: JobSummary
    items: list[JobResultItem]
    research_use_only: Literal[True] = True
    notice: str = RESEARCH_NOTICE
