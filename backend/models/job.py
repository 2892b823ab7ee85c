"""Batch jobs: one row per job, one row per item (an uploaded file) of a job.

An item is the unit of work a worker claims. ``(job_id, index)`` is unique, and the analysis an
item produces has an id derived from that pair (:func:`backend.services.jobs.item_analysis_id`),
so however often the broker delivers an item's task, at most one analysis row can exist for it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.db.base import Base, UTCDateTime, utcnow

# Item states. Terminal ones never change again (a redelivered task finds them and stops).
ITEM_QUEUED = "queued"
ITEM_RUNNING = "running"
ITEM_DONE = "done"
ITEM_FAILED = "failed"
ITEM_CANCELLED = "cancelled"
ITEM_TERMINAL = (ITEM_DONE, ITEM_FAILED, ITEM_CANCELLED)


class Job(Base):
    """A batch of images analysed with the same options, owned by one user."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # The API key that created the job, so its items are audited under the same actor.
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # batch: images analysed one by one; study: one item, a whole series (see models.study).
    kind: Mapped[str] = mapped_column(String(16), default="batch", server_default="batch")
    # queued | running | completed | cancelled (kept in step with the items; see services.jobs)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    backend: Mapped[str] = mapped_column(String(16))  # embedded | celery
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    total: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    items: Mapped[list[JobItem]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="JobItem.index",
    )


class JobItem(Base):
    """One file of a job and what became of it."""

    __tablename__ = "job_items"
    # The idempotency key: one row per (job, item), whatever the broker redelivers.
    __table_args__ = (UniqueConstraint("job_id", "index", name="uq_job_items_job_id_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Name of the stored input in the job's input folder; None when the file was refused at
    # upload (too large, empty) and the item failed at once.
    input_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    input_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)

    status: Mapped[str] = mapped_column(String(16), default=ITEM_QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Times a worker died holding this item (its lease lapsed and another took it over): an
    # item that kills its worker is failed after settings.job_max_attempts of these.
    lost: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(String(500), nullable=True)
    analysis_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("analyses.id", ondelete="SET NULL"), nullable=True, unique=True
    )
    # Compact per-model outcome for progress pages and results.csv (the full result is the
    # analysis in history).
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    job: Mapped[Job] = relationship(back_populates="items")
