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

from ml.layers import (
    ImageStatistics,
    IntensityQuantiles,
    OrdinalHeads,
    RuleFeatures,
    ScannerFingerprint,
    SiteRanks,
    SourceRecognizer,
)
from ml.models.common import merged
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

GRADCAM_LAYER = "conv4"
NORMALIZER = "measurements_norm"


def _appearance(inputs, c: dict[str, Any]):
    """The statistics CNN's trunk on a (by default 2x coarser) copy of the slice -> Dense."""
    pooled = inputs
    if int(c["appearance_pool"]) > 1:
        # The trunk only needs the appearance: a coarser copy of the slice is enough.
        pooled = layers.AveragePooling2D(int(c["appearance_pool"]), name="appearance_pool")(inputs)
    appearance = appearance_trunk(pooled, c["filters"])
    return layers.Dense(int(c["appearance_units"]), activation="relu", name="appearance")(
        appearance
    )


def _ordinal_outputs(x, c: dict[str, Any]):
    """MLP -> one severity score -> cumulative-link heads -> [binary_output, stage_output]."""
    for i, units in enumerate(c["dense_units"], start=1):
        x = layers.Dense(int(units), activation="gelu", name=f"dense{i}")(x)
        if float(c["dropout"]) > 0:
            x = layers.Dropout(float(c["dropout"]), name=f"dropout{i}")(x)
    score = layers.Dense(1, name="severity_score")(x)
    status_logits, stage_logits = OrdinalHeads(name="ordinal")(score)
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
    appearance = _appearance(inputs, c)
    measured = RuleFeatures(name="rule_features")(inputs)
    stats = ImageStatistics(name="statistics")(inputs)
    histogram = IntensityQuantiles(int(c["quantiles"]), name="quantiles")(inputs)
    x = layers.Concatenate(name="measurements")([measured, stats, histogram])
    # Standardised with the training images' mean and variance (training adapts this layer);
    # batch statistics of these few, very differently scaled numbers train far worse.
    x = layers.Normalization(name=NORMALIZER)(x)
    x = layers.Concatenate(name="features")([x, appearance])
    return keras.Model(inputs, _ordinal_outputs(x, c), name="ordinal_cnn")


HARMONIZED_DEFAULTS: dict[str, Any] = {
    **DEFAULTS,
    "max_sources": 8,
    "max_refs": 512,
    "recognizer_regularization": 10.0,
}
RECOGNIZER = "source_recognizer"
SITE_RANKS = "site_ranks"


def build_harmonized_ordinal(cfg: dict[str, Any] | None = None):
    """The ordinal CNN with site harmonisation: the rule features ranked within their source.

    The slice's fingerprint (histogram quantiles, :class:`~ml.layers.ScannerFingerprint`, the
    rule features) goes to a frozen :class:`~ml.layers.SourceRecognizer`; the rule features
    are replaced by their :class:`~ml.layers.SiteRanks` among the recognised source's training
    slices. The ranks, the source probabilities and the appearance trunk feed the MLP, the
    severity score and the ordinal heads as in :func:`build_ordinal_cnn`. Training adapts the
    recogniser and the ranks on the training split's images and source names (no labels).

    Args:
        cfg: overrides of ``HARMONIZED_DEFAULTS`` (those of ``build_ordinal_cnn`` plus
            ``max_sources``, ``max_refs`` and ``recognizer_regularization``).
    """
    c = merged(HARMONIZED_DEFAULTS, cfg)
    size = int(c["input_size"])
    inputs = keras.Input((size, size, 1), name="image")
    appearance = _appearance(inputs, c)
    measured = RuleFeatures(name="rule_features")(inputs)
    histogram = IntensityQuantiles(int(c["quantiles"]), name="quantiles")(inputs)
    fingerprint = ScannerFingerprint(name="fingerprint")(inputs)
    fingerprint = layers.Concatenate(name="source_evidence")([histogram, fingerprint, measured])
    sources = SourceRecognizer(
        int(c["max_sources"]), float(c["recognizer_regularization"]), name=RECOGNIZER
    )(fingerprint)
    ranks = SiteRanks(int(c["max_sources"]), int(c["max_refs"]), name=SITE_RANKS)(
        [measured, sources]
    )
    x = layers.Concatenate(name="features")([ranks, sources, appearance])
    return keras.Model(inputs, _ordinal_outputs(x, c), name="harmonized_ordinal")
