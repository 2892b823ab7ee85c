"""What one architecture is, in one place: :class:`ModelSpec`.

Each ``ml/models/<arch>.py`` exports one ``SPEC``; :mod:`ml.models` collects them, and every
per-architecture table the project needs (tasks, Grad-CAM layers, layers training adapts or may
cache, tiny test configs, how the weights were initialised) is read from the specs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ml.models.common import merged
from ml.vocab import TASKS, Task

__all__ = ["TASKS", "ModelSpec", "Task"]


@dataclass(frozen=True)
class ModelSpec:
    """One architecture: its builder and everything else that describes it.

    Attributes:
        name: the architecture name (manifests' ``architecture``).
        task: ``segmentation`` or ``classification``.
        build: builder taking a config dict (overrides of ``defaults``), returning a model.
        defaults: the builder's full default config; unknown keys are refused.
        tiny: a small config (64 px) for tests and random-weight bundles.
        gradcam_layer: the last convolutional feature layer Grad-CAM reads (classifiers),
            fixed or computed from the merged config.
        attention_layers: names of layers whose second output is attention weights.
        adapted: layers training adapts before fitting, in this order (keras ``Normalization``
            layers to the fit images; ``adapts_to_sources`` layers to the training split's
            images and source names, never labels).
        precomputable: weightless layers fed by the input alone, whose outputs training may
            compute once per stage instead of at every step.
        backbone: builds an EfficientNetB0 backbone whose initialisation the manifest records.
        rule_features: measures the labelling rule's own features in the graph
            (:class:`~ml.layers.RuleFeatures`) and scores one severity with ordinal heads
            (layers ``severity_score`` and ``ordinal``): explained in the rule's terms too
            (:mod:`ml.explain.features`).
    """

    name: str
    task: Task
    build: Callable[[dict[str, Any] | None], Any]
    defaults: Mapping[str, Any]
    tiny: Mapping[str, Any]
    gradcam_layer: str | Callable[[dict[str, Any]], str] | None = None
    attention_layers: Callable[[dict[str, Any]], list[str]] | None = None
    adapted: tuple[str, ...] = ()
    precomputable: tuple[str, ...] = ()
    backbone: bool = False
    rule_features: bool = False

    def config(self, cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``defaults`` updated by ``cfg`` (unknown keys refused)."""
        return merged(dict(self.defaults), dict(cfg or {}))

    def gradcam_layer_for(self, cfg: Mapping[str, Any] | None = None) -> str | None:
        """The Grad-CAM layer of a model built with ``cfg`` (None for segmenters)."""
        if callable(self.gradcam_layer):
            return self.gradcam_layer(self.config(cfg))
        return self.gradcam_layer

    def attention_layers_for(self, cfg: Mapping[str, Any] | None = None) -> list[str]:
        """Attention layer names of a model built with ``cfg`` (empty for most)."""
        return self.attention_layers(self.config(cfg)) if self.attention_layers else []

    def weights_init(self, cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """How the weights were initialised before training (ImageNet backbone or not)."""
        if not self.backbone:
            return {"imagenet": False, "init": "none"}
        from ml.models.backbone import backbone_init

        return backbone_init(self.config(cfg))
