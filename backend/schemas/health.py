"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class InferenceStats(BaseModel):
    """Runner counters: requests served and model calls made (batching makes calls < requests)."""

    requests: int
    model_calls: int
    queued: int
    rejected: int


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: bool
    models_loaded: int
    models: list[str]
    inference: InferenceStats
