"""Statistics-aware CNN: a small convolutional trunk plus the image's global statistics.

The feature-rule labels are a function of an image's brightness, texture and edge density,
normalised within its source (scanner/sequence). The trunk (global-average-pooled, so it sees
appearance such as the sequence, not where things are) tells the sources apart; the
:class:`~ml.layers.ImageStatistics` branch hands the network the statistics themselves. Much
smaller than the design's Simple CNN, and far less prone to memorising the training slices.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from ml.layers import ImageStatistics
from ml.models.common import classification_heads, merged
from ml.models.spec import ModelSpec

DEFAULTS: dict[str, Any] = {
    "input_size": 256,
    "filters": [16, 32, 64, 64],
    "dense_units": 64,
    "dropout": 0.3,
}

def appearance_trunk(inputs, filters):
    """Conv(stride-2 stem)-BN-ReLU levels with max pooling between them, global-average-pooled.

    Layers ``conv1..conv<n>`` (the last one is Grad-CAM's), ``bn*``, ``relu*``, ``pool*``,
    ``gap``.
    """
    x = inputs
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(
            int(f), 3, strides=2 if i == 1 else 1, padding="same", use_bias=False, name=f"conv{i}"
        )(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        if i < len(filters):
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    return layers.GlobalAveragePooling2D(name="gap")(x)


def build_stats_cnn(cfg: dict[str, Any] | None = None):
    """Conv trunk (stride-2 stem, BN, pooling) -> GAP, concatenated with ImageStatistics.

    Args:
        cfg: overrides of ``DEFAULTS`` (``input_size``, ``filters`` (4 levels), ``dense_units``,
            ``dropout``).

    Returns:
        A ``keras.Model`` with outputs ``[binary_output, stage_output]``; Grad-CAM uses the last
        conv layer (``conv<n>``).
    """
    c = merged(DEFAULTS, cfg)
    size = int(c["input_size"])
    inputs = keras.Input((size, size, 1), name="image")
    appearance = appearance_trunk(inputs, c["filters"])
    stats = ImageStatistics(name="statistics")(inputs)
    stats = layers.BatchNormalization(momentum=0.9, name="statistics_norm")(stats)
    x = layers.Concatenate(name="features")([appearance, stats])
    x = layers.Dense(int(c["dense_units"]), activation="relu", name="dense")(x)
    x = layers.Dropout(float(c["dropout"]), name="dropout")(x)
    return keras.Model(inputs, classification_heads(x), name="stats_cnn")


SPEC = ModelSpec(
    name="stats_cnn",
    task="classification",
    build=build_stats_cnn,
    defaults=DEFAULTS,
    tiny={"input_size": 64, "filters": [4, 4, 8, 8], "dense_units": 8},
    gradcam_layer=lambda c: f"conv{len(c['filters'])}",
)
