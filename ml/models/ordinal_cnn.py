"""Ordinal rule-feature CNN: measured features + appearance -> one severity score -> both heads.

Three branches meet in a small MLP that outputs one severity score:

- :class:`~ml.layers.RuleFeatures`: the feature rule's own measurements (brightness, lower-half
  brightness, texture, Canny edge density), computed exactly inside the network;
- :class:`~ml.layers.ImageStatistics`: gradient-based edge and intensity statistics;
- :class:`~ml.layers.IntensityQuantiles`: the grey-level histogram's quantiles, a fingerprint
  of the sequence;
- the statistics CNN's global-average-pooled convolutional trunk, which recognises the
  source's appearance (the rule normalises its features within each source).

The score feeds :class:`~ml.layers.OrdinalHeads` (ordered cut points), so AS status and stage
are ordered levels of one severity and can never contradict each other (a negative slice is
Normal). On feature-rule labels this measures how well a network learns the labelling rule,
not AS. Grad-CAM reads the trunk's last convolution (``conv4``).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from ml.layers import ImageStatistics, IntensityQuantiles, OrdinalHeads, RuleFeatures
from ml.models.common import merged
from ml.models.spec import ModelSpec
from ml.models.stats_cnn import appearance_trunk

DEFAULTS: dict[str, Any] = {
    "input_size": 256,
    "filters": [8, 16, 32, 32],
    "quantiles": 10,
    "appearance_pool": 2,
    "appearance_units": 8,
    "dense_units": [64, 64],
    "dropout": 0.0,
}

NORMALIZER = "measurements_norm"
# The one severity score and the ordinal heads holding its learnt cut points.
SCORE_LAYER = "severity_score"
ORDINAL_LAYER = "ordinal"
# Layers fed by the input alone, with no weights: training computes them once per stage.
MEASUREMENTS = ("rule_features", "statistics", "quantiles")


def appearance_branch(inputs, c: dict[str, Any]):
    """The statistics CNN's trunk on a (by default 2x coarser) copy of the slice -> Dense."""
    pooled = inputs
    if int(c["appearance_pool"]) > 1:
        # The trunk only needs the appearance: a coarser copy of the slice is enough.
        pooled = layers.AveragePooling2D(int(c["appearance_pool"]), name="appearance_pool")(inputs)
    appearance = appearance_trunk(pooled, c["filters"])
    return layers.Dense(int(c["appearance_units"]), activation="relu", name="appearance")(
        appearance
    )


def ordinal_outputs(x, c: dict[str, Any]):
    """MLP -> one severity score -> cumulative-link heads -> [binary_output, stage_output]."""
    for i, units in enumerate(c["dense_units"], start=1):
        x = layers.Dense(int(units), activation="gelu", name=f"dense{i}")(x)
        if float(c["dropout"]) > 0:
            x = layers.Dropout(float(c["dropout"]), name=f"dropout{i}")(x)
    score = layers.Dense(1, name=SCORE_LAYER)(x)
    status_logits, stage_logits = OrdinalHeads(name=ORDINAL_LAYER)(score)
    binary = layers.Softmax(name="binary_output")(status_logits)
    stage = layers.Softmax(name="stage_output")(stage_logits)
    return [binary, stage]


def build_ordinal_cnn(cfg: dict[str, Any] | None = None):
    """Rule features + image statistics + appearance trunk -> score -> ordinal heads.

    Args:
        cfg: overrides of ``DEFAULTS`` (``input_size``, ``filters`` (trunk levels),
            ``quantiles``, ``appearance_pool`` (input downsampling of the trunk),
            ``appearance_units``, ``dense_units`` (MLP widths), ``dropout``).

    Returns:
        A ``keras.Model`` with softmax outputs ``[binary_output, stage_output]``.
    """
    c = merged(DEFAULTS, cfg)
    size = int(c["input_size"])
    inputs = keras.Input((size, size, 1), name="image")
    appearance = appearance_branch(inputs, c)
    measured = RuleFeatures(name="rule_features")(inputs)
    stats = ImageStatistics(name="statistics")(inputs)
    histogram = IntensityQuantiles(int(c["quantiles"]), name="quantiles")(inputs)
    x = layers.Concatenate(name="measurements")([measured, stats, histogram])
    # Standardised with the training images' mean and variance (training adapts this layer);
    # batch statistics of these few, very differently scaled numbers train far worse.
    x = layers.Normalization(name=NORMALIZER)(x)
    x = layers.Concatenate(name="features")([x, appearance])
    return keras.Model(inputs, ordinal_outputs(x, c), name="ordinal_cnn")


SPEC = ModelSpec(
    name="ordinal_cnn",
    task="classification",
    build=build_ordinal_cnn,
    defaults=DEFAULTS,
    tiny={"input_size": 64, "filters": [4, 4, 8, 8], "appearance_units": 4, "dense_units": [8]},
    # The appearance trunk's last convolution.
    gradcam_layer=lambda c: f"conv{len(c['filters'])}",
    adapted=(NORMALIZER,),
    precomputable=MEASUREMENTS,
    rule_features=True,
)
