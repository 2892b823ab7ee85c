"""Whole-series analyses: what POST /studies returns, a study's progress and result, pages."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from backend.schemas.common import RESEARCH_NOTICE
from backend.schemas.jobs import ItemError
from backend.schemas.results import ResultFilter, StudyResult
from ml.vocab import CamMethod

StudyStatus = Literal["queued", "running", "done", "failed", "cancelled"]


class StudyOptions(BaseModel):
    """How the study is analysed (resolved when it was created)."""

    models: list[str] = Field(description="classifier keys")
    segmentation_model: str | None = None
    explain: bool = Field(default=True, description="heatmaps for the key slices")
    method: CamMethod | None = Field(
        default=None, description="None: each model's measured best method (its default_method)"
    )
    allow_out_of_domain: bool = False
    push: bool = Field(
        default=False, description="STOW-RS the SEG/SR/maps to the configured DICOMweb server"
    )


class PullRequest(BaseModel):
    """POST /studies/pull: fetch a study's sagittal series from the configured DICOMweb
    server (QIDO-RS, WADO-RS) and analyse it."""

    study_uid: str = Field(min_length=1, max_length=64, pattern=r"^[0-9.]+$")
    series_uid: str | None = Field(
        default=None, max_length=64, pattern=r"^[0-9.]+$", description="default: the sagittal one"
    )
    push: bool | None = Field(default=None, description="default: the server's dicomweb_push")
    models: list[str] = Field(default_factory=list, max_length=8)
    explain: bool = True
    allow_out_of_domain: bool = False


class PushState(BaseModel):
    status: Literal["pending", "done", "failed"]
    server: str | None = None
    objects: list[str] = Field(default_factory=list, description="SOP instance UIDs stored")
    message: str | None = None
    at: datetime | None = None


class StudyProgress(BaseModel):
    phase: str | None = Field(
        default=None, description="decode, segment, classify, explain or store"
    )
    slices_done: int
    slices_total: int
    percent: float


class StudySummary(BaseModel):
    id: uuid.UUID
    status: StudyStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: StudyProgress
    slices: int
    format: str | None = None
    as_status: str | None = None
    as_confidence: float | None = None
    stage: str | None = None
    stage_confidence: float | None = None
    in_domain: bool | None = None
    models: list[str] = Field(default_factory=list)
    url: str
    research_use_only: Literal[True] = True


class StudyPublic(StudySummary):
    """A study: status and progress while it runs; the full result once done."""

    options: StudyOptions
    input: dict[str, Any] = Field(description="format, slices, geometry, skipped files")
    error: ItemError | None = None
    job_id: uuid.UUID | None = None
    mask_url: str | None = Field(default=None, description="the 3D mask (NIfTI), once done")
    push: PushState | None = Field(default=None, description="results sent back over DICOMweb")
    result: StudyResult | None = None
    notice: str = RESEARCH_NOTICE


class StudyPage(BaseModel):
    items: list[StudySummary]
    total: int
    limit: int
    offset: int


class StudyFilter(ResultFilter):
    """GET /studies filters: those of GET /history (kind aside), and the status."""

    status: StudyStatus | None = None


__all__ = [
    "PullRequest",
    "PushState",
    "StudyFilter",
    "StudyOptions",
    "StudyPage",
    "StudyProgress",
    "StudyPublic",
    "StudyStatus",
    "StudySummary",
]
