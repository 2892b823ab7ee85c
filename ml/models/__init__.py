"""Model builders: ``build_model(architecture, cfg)`` over :data:`ARCHITECTURES`.

Every builder takes a config dict (keys may shrink a model for tests) and returns a
``keras.Model`` whose layers are all named. Importing this package registers the custom layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml.layers  # noqa: F401  (registers the custom layers for deserialisation)
from ml.models.attention_unet import build_attention_unet
from ml.models.attention_unet_lite import build_attention_unet_lite
from ml.models.backbone import FEATURE_LAYER, backbone_init, backbone_layers
from ml.models.flops import count_flops
from ml.models.hybrid_v1 import build_hybrid_v1
from ml.models.hybrid_v2 import build_hybrid_v2
from ml.models.hybrid_v3 import attention_layer_names, build_hybrid_v3
from ml.models.ordinal_cnn import GRADCAM_LAYER as ORDINAL_CNN_GRADCAM_LAYER
from ml.models.ordinal_cnn import NORMALIZER as ORDINAL_CNN_NORMALIZER
from ml.models.ordinal_cnn import RECOGNIZER as HARMONIZED_RECOGNIZER
from ml.models.ordinal_cnn import SITE_RANKS as HARMONIZED_SITE_RANKS
from ml.models.ordinal_cnn import build_harmonized_ordinal, build_ordinal_cnn
from ml.models.simple_cnn import build_simple_cnn
from ml.models.stats_cnn import GRADCAM_LAYER as STATS_CNN_GRADCAM_LAYER
from ml.models.stats_cnn import build_stats_cnn

BUILDERS: dict[str, Callable[..., Any]] = {
    "attention_unet": build_attention_unet,
    "attention_unet_lite": build_attention_unet_lite,
    "simple_cnn": build_simple_cnn,
    "hybrid_v1": build_hybrid_v1,
    "hybrid_v2": build_hybrid_v2,
    "hybrid_v3": build_hybrid_v3,
    "stats_cnn": build_stats_cnn,
    "ordinal_cnn": build_ordinal_cnn,
    "harmonized_ordinal": build_harmonized_ordinal,
}
ARCHITECTURES: tuple[str, ...] = tuple(BUILDERS)
TASKS: dict[str, str] = {
    "attention_unet": "segmentation",
    "attention_unet_lite": "segmentation",
    "simple_cnn": "classification",
    "hybrid_v1": "classification",
    "hybrid_v2": "classification",
    "hybrid_v3": "classification",
    "stats_cnn": "classification",
    "ordinal_cnn": "classification",
    "harmonized_ordinal": "classification",
}
HYBRIDS = ("hybrid_v1", "hybrid_v2", "hybrid_v3")
# Weightless layers that read only the input image: training computes their outputs once per
# stage (without augmentation) instead of at every step. The Canny hysteresis in RuleFeatures
# costs far more than the rest of the ordinal CNN.
PRECOMPUTABLE: dict[str, tuple[str, ...]] = {
    "ordinal_cnn": ("rule_features", "statistics", "quantiles"),
    "harmonized_ordinal": ("rule_features", "quantiles", "fingerprint"),
}


def build_model(architecture: str, cfg: dict[str, Any] | None = None):
    """Build a model by architecture name.

    Args:
        architecture: one of :data:`ARCHITECTURES`.
        cfg: builder config overrides (see each builder's ``DEFAULTS``).

    Returns:
        An unbuilt-weights (randomly initialised) ``keras.Model``.
    """
    if architecture not in BUILDERS:
        known = ", ".join(ARCHITECTURES)
        raise ValueError(f"unknown architecture {architecture!r}; known: {known}")
    return BUILDERS[architecture](cfg)


def task_of(architecture: str) -> str:
    """``segmentation`` or ``classification``."""
    return TASKS[architecture]


# Layers that training adapts before fitting, in this order: keras Normalization layers to the
# fit images; layers with ``adapts_to_sources`` (site harmonisation) to the whole training
# split's images and source names (no labels).
ADAPTED: dict[str, tuple[str, ...]] = {
    "ordinal_cnn": (ORDINAL_CNN_NORMALIZER,),
    "harmonized_ordinal": (HARMONIZED_RECOGNIZER, HARMONIZED_SITE_RANKS),
}


def adapted_layers(architecture: str) -> tuple[str, ...]:
    """Names of the layers training adapts before fitting (see :data:`ADAPTED`)."""
    return ADAPTED.get(architecture, ())


def precomputable_layers(architecture: str) -> tuple[str, ...]:
    """Names of weightless layers fed by the input alone, whose outputs training may cache."""
    return PRECOMPUTABLE.get(architecture, ())


def gradcam_layer(architecture: str, model) -> str | None:
    """Name of the last convolutional feature layer Grad-CAM should use (classifiers only)."""
    if architecture in HYBRIDS:
        return FEATURE_LAYER
    if architecture == "simple_cnn":
        convs = [layer.name for layer in model.layers if layer.name.startswith("conv")]
        return convs[-1]
    if architecture == "stats_cnn":
        return STATS_CNN_GRADCAM_LAYER
    if architecture in ("ordinal_cnn", "harmonized_ordinal"):
        return ORDINAL_CNN_GRADCAM_LAYER
    return None


def attention_layers(architecture: str, cfg: dict[str, Any] | None = None) -> list[str]:
    """Names of layers whose second output is attention weights (hybrid v3 only)."""
    return attention_layer_names(cfg) if architecture == "hybrid_v3" else []


def weights_init(architecture: str, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """How the model's weights were initialised before training (ImageNet backbone or not)."""
    if architecture in HYBRIDS:
        from ml.models.backbone import BACKBONE_DEFAULTS

        return backbone_init({**BACKBONE_DEFAULTS, **(cfg or {})})
    return {"imagenet": False, "init": "none"}


__all__ = [
    "ARCHITECTURES",
    "TASKS",
    "attention_layers",
    "backbone_layers",
    "build_model",
    "count_flops",
    "gradcam_layer",
    "task_of",
    "weights_init",
]
