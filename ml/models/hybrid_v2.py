"""Hybrid v2 (design): adapter -> EfficientNetB0 -> GAP -> Dense(512) -> Dense(256) -> heads.

4,838,319 parameters with the EfficientNetB0 backbone.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from ml.models.backbone import (
    BACKBONE_DEFAULTS,
    FEATURE_LAYER,
    build_backbone,
    set_backbone_trainable,
)
from ml.models.common import classification_heads, merged
from ml.models.spec import ModelSpec

DEFAULTS: dict[str, Any] = {
    "input_size": 256,
    **BACKBONE_DEFAULTS,
    "dense_units": [512, 256],
    "dropouts": [0.4, 0.3],
}


def build_hybrid_v2(cfg: dict[str, Any] | None = None):
    """Build hybrid v2 (``cfg`` overrides ``DEFAULTS``); outputs binary_output, stage_output."""
    c = merged(DEFAULTS, cfg)
    size = int(c["input_size"])
    inputs = keras.Input((size, size, 1), name="image")
    x = build_backbone(inputs, c)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    for i, (units, rate) in enumerate(zip(c["dense_units"], c["dropouts"], strict=True), 1):
        x = layers.Dense(int(units), activation="relu", name=f"dense{i}")(x)
        x = layers.Dropout(float(rate), name=f"dropout{i}")(x)
    model = keras.Model(inputs, classification_heads(x), name="hybrid_v2")
    if not c["backbone_trainable"]:
        set_backbone_trainable(model, False)
    return model


SPEC = ModelSpec(
    name="hybrid_v2",
    task="classification",
    build=build_hybrid_v2,
    defaults=DEFAULTS,
    tiny={
        "input_size": 64,
        "backbone": "tiny",
        "tiny_filters": [4, 8, 16],
        "dense_units": [16, 8],
        "dropouts": [0.1, 0.1],
    },
    gradcam_layer=FEATURE_LAYER,
    backbone=True,
)
