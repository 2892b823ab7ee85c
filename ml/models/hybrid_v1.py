"""Hybrid v1 (design): adapter -> EfficientNetB0 -> GAP -> sequence -> 2 Transformer blocks.

The design reshapes the pooled 1280-vector "to a sequence" without saying how; here it becomes
``sequence = [10, 128]`` (10 tokens of 128 channels) so attention has more than one token to mix.
After the blocks the tokens are averaged, then Dense(256) -> Dropout(0.3) -> the two heads.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from ml.layers import TransformerBlock
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
    "sequence": [10, 128],
    "blocks": 2,
    "num_heads": 4,
    "key_dim": 256,
    "ff_dim": 256,
    "dense_units": 256,
    "dropout": 0.3,
}


def build_hybrid_v1(cfg: dict[str, Any] | None = None):
    """Build hybrid v1 (``cfg`` overrides ``DEFAULTS``); outputs binary_output, stage_output."""
    c = merged(DEFAULTS, cfg)
    size = int(c["input_size"])
    inputs = keras.Input((size, size, 1), name="image")
    x = build_backbone(inputs, c)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    tokens, width = (int(v) for v in c["sequence"])
    if tokens * width != x.shape[-1]:
        raise ValueError(f"sequence {c['sequence']} does not hold {x.shape[-1]} features")
    x = layers.Reshape((tokens, width), name="to_sequence")(x)
    for i in range(1, int(c["blocks"]) + 1):
        x = TransformerBlock(
            int(c["num_heads"]), int(c["key_dim"]), int(c["ff_dim"]), name=f"transformer{i}"
        )(x)
    x = layers.GlobalAveragePooling1D(name="token_pool")(x)
    x = layers.Dense(int(c["dense_units"]), activation="relu", name="dense")(x)
    x = layers.Dropout(float(c["dropout"]), name="dropout")(x)
    model = keras.Model(inputs, classification_heads(x), name="hybrid_v1")
    if not c["backbone_trainable"]:
        set_backbone_trainable(model, False)
    return model


SPEC = ModelSpec(
    name="hybrid_v1",
    task="classification",
    build=build_hybrid_v1,
    defaults=DEFAULTS,
    tiny={
        "input_size": 64,
        "backbone": "tiny",
        "tiny_filters": [4, 8, 16],
        "sequence": [2, 8],
        "key_dim": 4,
        "ff_dim": 8,
        "dense_units": 8,
    },
    gradcam_layer=FEATURE_LAYER,
    backbone=True,
)
