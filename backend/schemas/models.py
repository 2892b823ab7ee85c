"""The model registry as clients see it: parts of the bundle manifest, typed once in ml.

The manifest's classes (:mod:`ml.manifest`) describe the models here too, so the API's schema
and the bundles on disk cannot drift apart.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ml.manifest import (
    Calibration,
    CrossValidation,
    DatasetRecord,
    ExplanationBenchmark,
    LabelProvenance,
    Metrics,
    Outputs,
    TrainingRecord,
    WeightsInfo,
)
from ml.vocab import CamMethod, Task

__all__ = ["LabelProvenance", "ModelCard", "ModelInfo", "PlotLink"]


class ModelInfo(BaseModel):
    key: str
    display_name: str
    task: Task
    version: str
    architecture: str
    parameters: int
    flops: int = Field(description="floating-point operations per image forward pass")
    input_shape: list[int]
    metrics: Metrics = Field(default_factory=Metrics)
    label_provenance: LabelProvenance
    default: bool = Field(description="the registry default for its task")
    intended_use: str = ""
    default_method: CamMethod | None = Field(
        default=None,
        description="classifiers: the heatmap method used when a request names none (the "
        "measured best one; gradcam when never measured)",
    )
    explanation: ExplanationBenchmark | None = Field(
        default=None,
        description="classifiers: measured faithfulness of each explanation method "
        "(deletion/insertion AUC and score with 95% intervals)",
    )
    calibration: Calibration | None = Field(
        default=None,
        description="classifiers: the temperature applied to each head's probabilities and the "
        "expected calibration error before and after",
    )
    cross_validation: CrossValidation | None = Field(
        default=None,
        description="k-fold cross-validation of the bundle's config (subject-grouped folds, "
        "pooled held-out predictions, 95% interval by resampling subjects), when it was run",
    )
    ready: bool = Field(default=True, description="loaded and warm (false while it loads)")


class PlotLink(BaseModel):
    name: str
    url: str


class ModelCard(ModelInfo):
    """Everything in the bundle's manifest plus its model card text and plot links."""

    outputs: Outputs
    training: TrainingRecord | None = None
    dataset: DatasetRecord | None = None
    gradcam_layer: str | None = None
    attention_layers: list[str] = Field(default_factory=list)
    weights: WeightsInfo
    created: str | None = None
    readme: str | None = Field(default=None, description="the bundle's README.md (markdown)")
    plots: list[PlotLink] = Field(default_factory=list)
