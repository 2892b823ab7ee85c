"""The design's Simple CNN classifier (16,870,790 parameters at 256x256)."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from ml.models.common import classification_heads, merged
from ml.models.spec import ModelSpec

DEFAULTS: dict[str, Any] = {
    "input_size": 256,
    "filters": [32, 64, 128],
    "dense_units": 128,
    "dropout": 0.5,
}

def build_simple_cnn(cfg: dict[str, Any] | None = None):
    """Conv(32)-pool, Conv(64)-pool, Conv(128)-pool, Flatten, Dense(128), Dropout(0.5), 2 heads.

    Args:
        cfg: overrides of ``DEFAULTS`` (``input_size``, ``filters``, ``dense_units``, ``dropout``).

    Returns:
        A ``keras.Model`` with outputs ``[binary_output, stage_output]``.
    """
    c = merged(DEFAULTS, cfg)
    size = int(c["input_size"])
    inputs = keras.Input((size, size, 1), name="image")
    x = inputs
    for i, f in enumerate(c["filters"], start=1):
        x = layers.Conv2D(int(f), 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(int(c["dense_units"]), activation="relu", name="dense")(x)
    x = layers.Dropout(float(c["dropout"]), name="dropout")(x)
    return keras.Model(inputs, classification_heads(x), name="simple_cnn")


SPEC = ModelSpec(
    name="simple_cnn",
    task="classification",
    build=build_simple_cnn,
    defaults=DEFAULTS,
    tiny={"input_size": 64, "filters": [4, 8, 8], "dense_units": 8},
    # The last convolution: conv3 with the design's three levels.
    gradcam_layer=lambda c: f"conv{len(c['filters'])}",
)
