"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class InferenceStats(BaseModel):
    """Runner counters: requests served and model calls made (batching makes calls < requests)."""

    requests: int
    model_calls: int
    queued: int
    rejected: int
    intra_op_threads: int = Field(
        default=0, description="TensorFlow threads per operation (0: TensorFlow's default)"
    )


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: bool
    models_loaded: int = Field(description="models loaded and warm")
    models: list[str] = Field(description="every installed model, loaded or still loading")
    loading: list[str] = Field(
        default_factory=list,
        description="models still loading or warming in the background (requests wait for them)",
    )
    inference: InferenceStats


class Limits(BaseModel):
    """What this server accepts, so clients can check before they upload (every limit is a
    setting; crossing one answers 413 or 400 with its code)."""

    max_upload_bytes: int = Field(description="one image upload")
    max_pixels: int = Field(description="pixels of one decoded image (rows x columns)")
    max_frames: int = Field(description="frames of one multi-frame DICOM or volume")
    max_models_per_request: int
    job_max_items: int = Field(description="files of one batch job")
    job_max_bytes: int = Field(description="all files of one batch job together")
    min_password_length: int
