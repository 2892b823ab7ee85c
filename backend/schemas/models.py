"""The model registry as clients see it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class LabelProvenance(BaseModel):
    """Where a model's training labels came from; always research-use-only."""

    label_source: str = Field(description="feature_rule_v2 | feature_rule_v1 | clinical | ...")
    description: str = ""
    rule_version: str | None = None
    research_use_only: bool = True


class ModelInfo(BaseModel):
    key: str
    display_name: str
    task: Literal["segmentation", "classification"]
    version: str
    architecture: str
    parameters: int
    flops: int = Field(description="floating-point operations per image forward pass")
    input_shape: list[int]
    metrics: dict[str, Any] = Field(default_factory=dict)
    label_provenance: LabelProvenance
    default: bool = Field(description="the registry default for its task")
    intended_use: str = ""


class PlotLink(BaseModel):
    name: str
    url: str


class ModelCard(ModelInfo):
    """Everything in the bundle's manifest plus its model card text and plot links."""

    outputs: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    dataset: dict[str, Any] = Field(default_factory=dict)
    gradcam_layer: str | None = None
    attention_layers: list[str] = Field(default_factory=list)
    weights: dict[str, Any] = Field(default_factory=dict)
    created: str | None = None
    readme: str | None = Field(default=None, description="the bundle's README.md (markdown)")
    plots: list[PlotLink] = Field(default_factory=list)
