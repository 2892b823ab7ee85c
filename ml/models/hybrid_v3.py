"""Hybrid v3: a Transformer over the spatial tokens of the backbone's last feature map.

EfficientNetB0's (S/32, S/32, 1280) map is projected to ``token_dim`` channels; each of its
(S/32)^2 positions becomes a token with a learned position embedding, a class token is prepended,
and pre-norm Transformer blocks mix them. The blocks return their attention weights as a second
output (names in :data:`ATTENTION_LAYERS` order, shape (N, heads, 1 + T, 1 + T), class token
first), so attention rollout from the class token gives an (S/32, S/32) map of where it looked.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from ml.layers import ClassToken, PositionEmbedding, SelectToken, TransformerBlock
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
    "token_dim": 192,
    "blocks": 2,
    "num_heads": 4,
    "key_dim": 48,
    "ff_dim": 384,
    "attention_dropout": 0.1,
    "dense_units": 256,
    "dropout": 0.3,
}


def attention_layer_names(cfg: dict[str, Any] | None = None) -> list[str]:
    """Names of the Transformer blocks whose second output is the attention weights."""
    c = merged(DEFAULTS, cfg)
    return [f"transformer{i}" for i in range(1, int(c["blocks"]) + 1)]


def build_hybrid_v3(cfg: dict[str, Any] | None = None):
    """Build hybrid v3 (``cfg`` overrides ``DEFAULTS``); outputs binary_output, stage_output."""
    c = merged(DEFAULTS, cfg)
    size = int(c["input_size"])
    inputs = keras.Input((size, size, 1), name="image")
    features = build_backbone(inputs, c)
    grid_h, grid_w = int(features.shape[1]), int(features.shape[2])
    x = layers.Conv2D(int(c["token_dim"]), 1, name="token_projection")(features)
    x = layers.Reshape((grid_h * grid_w, int(c["token_dim"])), name="to_tokens")(x)
    x = ClassToken(name="class_token")(x)
    x = PositionEmbedding(name="position_embedding")(x)
    for name in attention_layer_names(c):
        x, _ = TransformerBlock(
            int(c["num_heads"]),
            int(c["key_dim"]),
            int(c["ff_dim"]),
            dropout=float(c["attention_dropout"]),
            return_attention=True,
            name=name,
        )(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    x = SelectToken(0, name="class_output_token")(x)
    x = layers.Dense(int(c["dense_units"]), activation="relu", name="dense")(x)
    x = layers.Dropout(float(c["dropout"]), name="dropout")(x)
    model = keras.Model(inputs, classification_heads(x), name="hybrid_v3")
    if not c["backbone_trainable"]:
        set_backbone_trainable(model, False)
    return model


def attention_grid(model) -> tuple[int, int]:
    """The (rows, cols) of the spatial token grid of a built hybrid v3."""
    shape = model.get_layer("top_activation").output.shape
    return int(shape[1]), int(shape[2])


SPEC = ModelSpec(
    name="hybrid_v3",
    task="classification",
    build=build_hybrid_v3,
    defaults=DEFAULTS,
    tiny={
        "input_size": 64,
        "backbone": "tiny",
        "tiny_filters": [4, 8, 16],
        "token_dim": 8,
        "key_dim": 4,
        "ff_dim": 8,
        "dense_units": 8,
    },
    gradcam_layer=FEATURE_LAYER,
    attention_layers=attention_layer_names,
    backbone=True,
)
