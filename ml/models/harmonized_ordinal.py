"""Site-harmonised ordinal CNN: the ordinal CNN with the rule features ranked within their source.

The feature-rule labels rank each slice's measurements among the training slices of its own
source (scanner and sequence), so the same measurement means different labels on different
scanners. This model recognises the source first and ranks the features within it, the way
multi-site MRI studies harmonise scanners. Grad-CAM reads the appearance trunk's last conv.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from ml.layers import (
    IntensityQuantiles,
    RuleFeatures,
    ScannerFingerprint,
    SiteRanks,
    SourceRecognizer,
)
from ml.models.common import merged
from ml.models.ordinal_cnn import DEFAULTS as ORDINAL_DEFAULTS
from ml.models.ordinal_cnn import appearance_branch, ordinal_outputs
from ml.models.spec import ModelSpec

DEFAULTS: dict[str, Any] = {
    **ORDINAL_DEFAULTS,
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
        cfg: overrides of ``DEFAULTS`` (those of ``build_ordinal_cnn`` plus
            ``max_sources``, ``max_refs`` and ``recognizer_regularization``).
    """
    c = merged(DEFAULTS, cfg)
    size = int(c["input_size"])
    inputs = keras.Input((size, size, 1), name="image")
    appearance = appearance_branch(inputs, c)
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
    return keras.Model(inputs, ordinal_outputs(x, c), name="harmonized_ordinal")


SPEC = ModelSpec(
    name="harmonized_ordinal",
    task="classification",
    build=build_harmonized_ordinal,
    defaults=DEFAULTS,
    tiny={
        "input_size": 64,
        "filters": [4, 4, 8, 8],
        "appearance_units": 4,
        "dense_units": [8],
        "max_refs": 32,
    },
    gradcam_layer=lambda c: f"conv{len(c['filters'])}",
    adapted=(RECOGNIZER, SITE_RANKS),
    precomputable=("rule_features", "quantiles", "fingerprint"),
    rule_features=True,
)
