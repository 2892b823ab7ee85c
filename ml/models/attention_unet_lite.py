"""Lite Attention U-Net: the design's topology at a quarter of the width, with BatchNorm.

A quarter of the filters at every level cuts convolution FLOPs about 16x; BatchNorm keeps the
narrow network easy to train with Dice + BCE. Same input/output contract as the design's model.
"""

from __future__ import annotations

from typing import Any

from ml.models.attention_unet import build_attention_unet
from ml.models.common import merged
from ml.models.spec import ModelSpec

DEFAULTS: dict[str, Any] = {
    "input_size": 256,
    "base_filters": 16,
    "depth": 3,
    "batchnorm": True,
    "bn_momentum": 0.9,
    "dropout": 0.0,
    "internal_scale": 1,
    "refine_filters": 0,
    "refine_layers": 2,
    "refine_features": False,
    "input_norm": "none",
}


def build_attention_unet_lite(cfg: dict[str, Any] | None = None):
    """Build the lite Attention U-Net (``cfg`` overrides ``DEFAULTS``)."""
    return build_attention_unet(merged(DEFAULTS, cfg), name="attention_unet_lite")


SPEC = ModelSpec(
    name="attention_unet_lite",
    task="segmentation",
    build=build_attention_unet_lite,
    defaults=DEFAULTS,
    tiny={"input_size": 64, "base_filters": 4},
)
