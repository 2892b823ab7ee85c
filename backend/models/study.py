"""Whole-series analyses (studies): one row per uploaded series, from upload to stored result.

A study runs as a job of kind ``study`` with one item; this row carries what the job does not:
the phase and slice progress while it runs, what the input was (no patient data), and once it is
done the study-level headline. The full result is an :class:`~backend.models.Analysis` of kind
``study`` with the same id, so history, deletion, artifacts and quotas treat it like any other.

``source`` holds the only patient and study attributes kept: those an output object (DICOM SEG
or SR) must carry to refer back to the series. With ``deidentify`` on they are the
de-identified values.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from backend.db.base import Base, UTCDateTime, utcnow

# Study states: queued -> running -> done | failed | cancelled.
STUDY_QUEUED = "queued"
STUDY_RUNNING = "running"
STUDY_DONE = "done"
STUDY_FAILED = "failed"
STUDY_CANCELLED = "cancelled"
STUDY_TERMINAL = (STUDY_DONE, STUDY_FAILED, STUDY_CANCELLED)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=STUDY_QUEUED, index=True)
    # What it is doing now (decode, segment, classify, explain, store) and slices done of total.
    phase: Mapped[str | None] = mapped_column(String(16), nullable=True)
    slices_done: Mapped[int] = mapped_column(Integer, default=0)
    slices_total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(String(500), nullable=True)

    # The input as the API shows it: format, slice count, geometry, skipped files (no patient).
    input_summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Patient/study attributes and UIDs an output object must carry (see module docstring).
    source: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    # Study-level headline of the first classifier, for listing and filtering.
    as_status: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    as_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    stage: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    stage_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    in_domain: Mapped[bool | None] = mapped_column(nullable=True)
    # DICOMweb: where the series came from (pull) and whether the results went back (push):
    # {"status": "pending|done|failed", "server": ..., "objects": [...], "message": ..., "at": ...}
    push: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # STOW-RS in: a digest of the sorted SOP Instance UIDs the request carried, so the same
    # instances stored again (a router resending after a lost answer) return this study instead
    # of a second analysis; and which of them were refused, by a digest of each UID (no UIDs
    # are kept: with ``deidentify`` on they would link back to the patient).
    content_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    refused_instances: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
