"""Inference results: what /segment, /classify, /explain and /analyses return and history keeps.

Every result carries its id, the models and versions used, their label provenance and the
research-use-only notice. Image links point at `/artifacts/{id}/{name}` and need the same
credentials as the rest of the API.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from backend.schemas.common import RESEARCH_NOTICE
from backend.schemas.models import LabelProvenance
from ml.vocab import AsStatus, CamMethod, Focus, Head, Stage

Kind = Literal["segment", "classify", "explain", "analysis"]
# Pages past this are refused (422) rather than handed to the database driver.
MAX_OFFSET = 2**31 - 1
ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)


class ModelRef(BaseModel):
    key: str
    display_name: str
    version: str
    architecture: str


class ImageInfo(BaseModel):
    """The uploaded slice: format found by content, original size, hash; not the file itself."""

    format: str
    width: int
    height: int
    sha256: str
    filename: str | None = None
    frame: int | None = Field(default=None, description="frame / slice index used, when chosen")


class Box(BaseModel):
    """A box in the coordinates of the 256x256 display image (`image_url`)."""

    x1: int
    y1: int
    x2: int
    y2: int


class SegmentationOutput(BaseModel):
    model: ModelRef
    threshold: float
    probability_mean: float = Field(description="mean foreground probability over the image")
    probability_max: float
    mask_fraction: float = Field(description="share of pixels above the threshold")
    roi: Box | None = Field(
        description="lumbosacral region of interest, when structures were found"
    )
    mask_url: str
    overlay_url: str
    label_provenance: LabelProvenance


class ClassificationOutput(BaseModel):
    model: ModelRef
    as_status: AsStatus
    as_probability: float = Field(description="probability of the predicted AS status")
    as_probabilities: dict[str, float]
    stage: str
    stage_index: int
    stage_probability: float
    stage_probabilities: dict[str, float]
    label_provenance: LabelProvenance


class Faithfulness(BaseModel):
    """Deletion/insertion test: does removing the highlighted pixels change the prediction?"""

    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    score: float = Field(description="higher is more faithful; > 0 beats random deletion")
    interpretation: str = Field(default="", description="the score in one plain sentence")


class ExplanationOutput(BaseModel):
    model: ModelRef
    head: Head
    method: CamMethod
    focus: Focus
    class_index: int
    class_label: str
    probability: float
    inside_fraction: float | None = Field(
        default=None, description="share of heatmap mass inside the focus region"
    )
    focus_note: str = Field(default="", description="why the focus differs from the one asked")
    roi: Box | None = None
    faithfulness: Faithfulness | None = None
    heatmap_url: str
    overlay_url: str
    focused_overlay_url: str | None = None
    label_provenance: LabelProvenance


class ResultBase(BaseModel):
    id: uuid.UUID
    created_at: datetime
    image: ImageInfo
    image_url: str = Field(description="the preprocessed 256x256 slice the models saw")
    research_use_only: Literal[True] = True
    notice: str = RESEARCH_NOTICE
    timings_ms: dict[str, float] = Field(default_factory=dict)


class SegmentResult(ResultBase):
    kind: Literal["segment"] = "segment"
    segmentation: SegmentationOutput


class ClassifyResult(ResultBase):
    kind: Literal["classify"] = "classify"
    classifications: list[ClassificationOutput]


class ExplainResult(ResultBase):
    kind: Literal["explain"] = "explain"
    explanation: ExplanationOutput


class AnalysisResult(ResultBase):
    """The full pipeline: segmentation, every chosen classifier side by side, explanations."""

    kind: Literal["analysis"] = "analysis"
    segmentation: SegmentationOutput | None
    classifications: list[ClassificationOutput]
    explanations: list[ExplanationOutput]


AnyResult = Annotated[
    SegmentResult | ClassifyResult | ExplainResult | AnalysisResult, Field(discriminator="kind")
]


class HistoryItem(BaseModel):
    id: uuid.UUID
    kind: Kind
    created_at: datetime
    as_status: str | None = None
    as_confidence: float | None = None
    stage: str | None = None
    stage_confidence: float | None = None
    models: list[str]
    image_url: str | None = None
    filename: str | None = None


class HistoryPage(BaseModel):
    items: list[HistoryItem]
    total: int
    limit: int
    offset: int


class HistoryFilter(BaseModel):
    """Query filters for GET /history."""

    date_from: date | datetime | None = None
    date_to: date | datetime | None = None
    as_status: AsStatus | None = None
    stage: Stage | None = Field(default=None, description="any letter case")
    model: str | None = None
    kind: Kind | None = None

    @field_validator("stage", mode="before")
    @classmethod
    def _stage_any_case(cls, value: object) -> object:
        if isinstance(value, str):
            by_lower = {s.value.lower(): s for s in Stage}
            return by_lower.get(value.strip().lower(), value)
        return value

    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)

    @field_validator("date_from", "date_to", mode="before")
    @classmethod
    def _iso_only(cls, value: object) -> object:
        # Without this a number-like string ("0.5") would be read as a Unix timestamp.
        if isinstance(value, str) and not ISO_DATE.match(value.strip()):
            raise ValueError("use an ISO 8601 date (2026-11-30) or date-time")
        return value
