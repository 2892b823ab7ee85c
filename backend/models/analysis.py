"""Stored inference results (the history): one row per request, one row per model used."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.db.base import Base, UTCDateTime, utcnow


class Analysis(Base):
    """One stored result: the design's `predictions` row plus provenance and timings.

    ``result`` holds the full response body the client got, so history shows exactly that.
    """

    __tablename__ = "analyses"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # segment | classify | explain | analysis
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    image_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    image_format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    input_sha256: Mapped[str] = mapped_column(String(64), index=True)
    original_filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Bytes of its files in the artifact store (the owner's storage quota counts them).
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    # Headline values from the first classifier, for listing and filtering.
    as_status: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    as_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    stage: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    stage_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)

    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    model_versions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    label_provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)

    model_results: Mapped[list[ModelResult]] = relationship(
        back_populates="analysis", cascade="all, delete-orphan", passive_deletes=True
    )


class ModelResult(Base):
    """One model's output inside an analysis (lets history filter by model, status and stage)."""

    __tablename__ = "model_results"
    __table_args__ = (Index("ix_model_results_model_key_analysis_id", "model_key", "analysis_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    analysis_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("analyses.id", ondelete="CASCADE"), index=True
    )
    model_key: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(16))
    as_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    as_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    stage: Mapped[str | None] = mapped_column(String(16), nullable=True)
    stage_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)

    analysis: Mapped[Analysis] = relationship(back_populates="model_results")
