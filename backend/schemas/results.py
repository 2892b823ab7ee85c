"""Inference results: what /segment, /classify, /explain and /analyses return and history keeps.

Every result carries its id, the models and versions used, their label provenance and the
research-use-only notice. Image links point at `/artifacts/{id}/{name}` and need the same
credentials as the rest of the API.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator

from backend.core.text import no_control
from backend.schemas.common import RESEARCH_NOTICE
from backend.schemas.models import LabelProvenance
from ml.vocab import AsStatus, CamMethod, Focus, Head, Stage

Kind = Literal["segment", "classify", "explain", "analysis", "study"]
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


class VertebralLevel(BaseModel):
    """One vertebral body of the mask, named by its place in the column (L5 lowest)."""

    name: str = Field(description="L5, L4, L3, L2, L1, T12 ... counted up from the lowest body")
    area_fraction: float = Field(description="share of the image's pixels")
    centroid: tuple[float, float] = Field(description="(x, y) in the image's pixels")
    box: Box | None


class SegmentationOutput(BaseModel):
    model: ModelRef
    threshold: float
    probability_mean: float = Field(description="mean foreground probability over the image")
    probability_max: float
    mask_fraction: float = Field(description="share of pixels above the threshold")
    roi: Box | None = Field(
        description="lumbosacral region of interest, when structures were found"
    )
    levels: list[VertebralLevel] = Field(
        default_factory=list, description="the segmented vertebral bodies, named, lowest first"
    )
    levels_note: str = Field(default="", description="how the levels were named, and when not")
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
    steps: int = Field(default=0, description="equal pixel-fraction steps of each curve")
    random_orders: int = Field(default=0, description="random pixel orders of the baseline curve")
    images_run: int = Field(default=0, description="perturbed images the model ran for this score")


class CutPoint(BaseModel):
    """A threshold on a severity score: the level named is reached above ``value``."""

    name: str = Field(description="AS positive, Early, Moderate or Advanced")
    value: float
    crossed: bool = Field(description="the score is above this cut point")


class RuleFeature(BaseModel):
    """One weighted input of the labelling rule and its share of the rule's severity score."""

    name: str = Field(description="brightness, texture or edge_density")
    label: str
    value: float = Field(description="the raw input (brightness mixes two measurements)")
    percentile: float = Field(
        description="mid-rank percentile among the rule's training slices of the group, [0, 1]"
    )
    weight: float = Field(description="the rule's weight of this input")
    contribution: float = Field(
        description="weight x percentile; the contributions add up to the rule's score"
    )
    components: dict[str, float] = Field(
        description="measurement name -> its weight inside this input"
    )


class FeatureMeasurement(BaseModel):
    """One measurement the rule makes on the 8-bit 256x256 slice, and its pixel map."""

    name: str = Field(description="mean, lower_mean, std or edge_density")
    label: str
    value: float
    unit: str
    map_url: str = Field(description="the pixels the measurement is made of (grayscale PNG)")
    note: str = Field(description="what the map shows and how the value follows from it")


class ModelSeverity(BaseModel):
    """The network's own severity score, its learnt cut points and what it predicts."""

    score: float = Field(description="the model's severity score (log-odds scale)")
    cut_points: list[CutPoint]
    as_status: AsStatus
    stage: Stage
    sources: dict[str, float] = Field(
        default_factory=dict,
        description="probability of each training source, for a model that recognises it",
    )


class FeatureExplanation(BaseModel):
    """A rule-feature model explained in its own terms: the labelling rule it learnt, applied
    to this slice feature by feature, beside the model's own severity score."""

    rule_version: str
    group: str = Field(
        description="whose training slices rank the features: a source name, or * (all pooled)"
    )
    features: list[RuleFeature]
    measurements: list[FeatureMeasurement]
    score: float = Field(description="the rule's severity score, [0, 1]")
    cut_points: list[CutPoint]
    as_status: AsStatus = Field(description="the status the rule gives this slice")
    stage: Stage = Field(description="the stage the rule gives this slice")
    model: ModelSeverity
    agrees: bool = Field(description="the model predicts the rule's status and stage")
    note: str = Field(description="what is the rule and what is the model, in plain words")


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
    method_note: str = Field(
        default="", description="why the method shown differs from the one asked (empty map)"
    )
    roi: Box | None = None
    faithfulness: Faithfulness | None = None
    heatmap_url: str
    overlay_url: str
    focused_overlay_url: str | None = None
    features: FeatureExplanation | None = Field(
        default=None,
        description="rule-feature models only: the labelling rule's features, weights, cut "
        "points and pixel maps for this slice, beside the model's own severity score",
    )
    label_provenance: LabelProvenance


class DomainInfo(BaseModel):
    """Whether the image is like the slices the models were trained on (applicability domain)."""

    in_domain: bool
    score: float | None = Field(
        default=None,
        description="distance from the training slices' distribution; in the domain at most 1",
    )
    reasons: list[str] = Field(default_factory=list, description="why, in plain sentences")


class ResultBase(BaseModel):
    id: uuid.UUID
    created_at: datetime
    image: ImageInfo
    image_url: str = Field(description="the preprocessed 256x256 slice the models saw")
    domain: DomainInfo | None = None
    withheld: bool = Field(
        default=False,
        description="classifier outputs withheld: the image is outside the models' domain "
        "(ask again with allow_out_of_domain=true to see them anyway)",
    )
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
    explanation: ExplanationOutput | None = Field(description="None when withheld")


class AnalysisResult(ResultBase):
    """The full pipeline: segmentation, every chosen classifier side by side, explanations."""

    kind: Literal["analysis"] = "analysis"
    segmentation: SegmentationOutput | None
    classifications: list[ClassificationOutput]
    explanations: list[ExplanationOutput]


class SliceClassification(BaseModel):
    """One classifier's answer on one slice (the study chart plots ``p_positive``)."""

    model: str = Field(description="model key")
    p_positive: float = Field(description="probability of AS positive")
    as_status: AsStatus
    stage: str
    stage_probability: float


class SliceHeatmap(BaseModel):
    """A key slice's explanation by one classifier."""

    model: str
    method: CamMethod = CamMethod.gradcam
    method_note: str = ""
    class_label: str
    probability: float
    inside_fraction: float | None = None
    faithfulness_score: float | None = None
    heatmap_url: str = Field(description="the heatmap alone (RGBA, transparent where cold)")
    overlay_url: str = Field(description="the heatmap over the slice")


class StudySlice(BaseModel):
    index: int = Field(description="position in the series, ordered along the slice normal")
    position_mm: float = Field(description="distance along the slice normal from slice 0")
    sop_instance_uid: str | None = None
    frame: int | None = Field(default=None, description="frame of a multi-frame instance")
    image_url: str | None = Field(description="the 256x256 slice; None when it could not be read")
    mask_url: str | None = Field(default=None, description="the mask as a transparent overlay")
    mask_fraction: float = 0.0
    key: bool = Field(description="one of the key slices the study-level answer rests on")
    domain: DomainInfo | None = None
    classifications: list[SliceClassification] = Field(default_factory=list)
    heatmaps: list[SliceHeatmap] = Field(default_factory=list)
    error: str | None = Field(default=None, description="why the slice was left out")


class StudyModelResult(BaseModel):
    """One classifier's study-level answer and its spread over the key slices."""

    model: ModelRef
    as_status: AsStatus
    as_probability: float
    as_probabilities: dict[str, float]
    p_positive_mean: float
    p_positive_max: float
    stage: str
    stage_probability: float
    stage_probabilities: dict[str, float]
    status_agreement: float = Field(description="share of key slices whose status agrees")
    stage_agreement: float = Field(description="share of key slices whose stage agrees")
    slices: int = Field(description="key slices it rests on")
    label_provenance: LabelProvenance


class StudySegmentation(BaseModel):
    model: ModelRef
    mask_url: str = Field(description="the 3D mask (NIfTI, on the input's grid and affine)")
    voxels: int
    volume_ml: float
    key_slices: list[int]
    key_slice_rule: str
    label_provenance: LabelProvenance


class StudyDomain(DomainInfo):
    slices_out_of_domain: int = 0
    slices_checked: int = 0


class StudyResult(BaseModel):
    """A whole series: every slice segmented into one 3D mask, the key slices classified and
    explained, one answer per model with its spread, and the applicability domain."""

    id: uuid.UUID
    kind: Literal["study"] = "study"
    created_at: datetime
    input: dict[str, Any] = Field(description="format, slices, geometry, skipped files")
    segmentation: StudySegmentation | None
    models: list[StudyModelResult]
    slices: list[StudySlice]
    domain: StudyDomain
    withheld: bool = Field(
        default=False,
        description="classifier outputs withheld: the key slices are outside the models' "
        "domain (send again with allow_out_of_domain=true to see them anyway)",
    )
    research_use_only: Literal[True] = True
    notice: str = RESEARCH_NOTICE
    timings_ms: dict[str, float] = Field(default_factory=dict)


AnyResult = Annotated[
    SegmentResult | ClassifyResult | ExplainResult | AnalysisResult | StudyResult,
    Field(discriminator="kind"),
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


class ResultFilter(BaseModel):
    """Query filters shared by GET /history and GET /studies."""

    date_from: date | datetime | None = None
    date_to: date | datetime | None = None
    as_status: AsStatus | None = None
    stage: Stage | None = Field(default=None, description="any letter case")
    model: Annotated[str, AfterValidator(no_control)] | None = Field(default=None, max_length=200)

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


class HistoryFilter(ResultFilter):
    """Query filters for GET /history."""

    kind: Kind | None = None
