"""Shapes shared by every route: the error body and the research-use notice."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

RESEARCH_NOTICE = (
    "Research use only - not a diagnosis. Labels come from the model's stated label provenance "
    "(for the bundled models, a rule over image features rather than radiologists' AS labels)."
)


class ErrorResponse(BaseModel):
    """Every 4xx/503 body: a machine-readable code and one human sentence."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "unsupported_format",
                    "message": "Unsupported file: expected PNG, "
                    "JPEG, NumPy .npy, DICOM or NIfTI (recognised by content).",
                }
            ]
        }
    )

    code: str = Field(description="machine-readable error code")
    message: str = Field(description="one sentence for a human")
    detail: Any | None = Field(default=None, description="extra data (e.g. field errors)")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error body for these statuses."""
    return {s: {"model": ErrorResponse} for s in statuses}
