"""Rule-feature explanations: a slice in the terms of the labelling rule its model learnt.

The ordinal models (``ordinal_cnn``, ``harmonized_ordinal``) were trained on labels that a fitted
feature rule gave (:mod:`ml.data.labels`, rule v2), and they measure the rule's own features in
their graph (:class:`~ml.layers.RuleFeatures`). This module explains a slice the way the rule
scores it, with the rule's own code:

- the four measurements on the 8-bit slice (whole-slice mean, lower-half mean, standard
  deviation, Canny edge density), each with the pixel map it is the mean of;
- the rule's three inputs (brightness = 0.4 mean + 0.6 lower-half mean, texture = std, edge
  density), each as its mid-rank percentile among the rule's training slices, its weight and
  its contribution (weight x percentile); the contributions add up to the severity score;
- the fitted cut points (AS positive, then Early, Moderate, Advanced), which ones the score
  crossed, and the status and stage the rule gives.

:func:`model_severity` reads the network's own answer next to it: its one severity score, its
learnt cut points and its predicted status and stage. The network learns the rule from examples;
the two can disagree, and an explanation shows both and says which is which.

The rule ranks each feature among the training slices of the slice's own source (scanner and
sequence). A model that recognises the source first (``harmonized_ordinal``) says which source it
sees, and the rule is applied in that source's group (:func:`rule_source`); for any other model,
or an unsure recognition, the features are ranked among all training slices pooled, as the rule
does for a source it has not seen, and then the rule's answer may differ from the per-source
labels the model learnt.

The rule part is pure NumPy (and OpenCV's Canny, as the rule itself); only :func:`model_severity`
and :func:`explain_rule_model` touch Keras.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml.data.labels import (
    AS_STATUS_NAMES,
    GLOBAL_GROUP,
    RULE_INPUTS,
    STAGE_NAMES,
    V2,
    LabelRule,
    edge_map,
    image_features,
    rule_slice,
)

__all__ = [
    "MEASUREMENTS",
    "CutPoint",
    "FeatureExplanation",
    "Measurement",
    "ModelSeverity",
    "RuleExplanation",
    "RuleInput",
    "crossed_cuts",
    "explain_features",
    "explain_rule_model",
    "feature_maps",
    "model_severity",
    "recognised_sources",
    "rule_source",
]

MEASUREMENTS = ("mean", "lower_mean", "std", "edge_density")
LABELS = {
    "mean": "Brightness (whole slice)",
    "lower_mean": "Brightness (lower half)",
    "std": "Texture (grey-level spread)",
    "edge_density": "Edge density",
    "brightness": "Brightness",
    "texture": "Texture",
}
UNITS = {"mean": "grey level", "lower_mean": "grey level", "std": "grey level",
         "edge_density": "share of pixels"}  # fmt: skip
MAP_NOTES = {
    "mean": "the 8-bit slice (grey level / 255); the measurement is its mean",
    "lower_mean": "the slice's lower half (rows H/2 and below; the upper half blanked); the "
    "measurement is the mean of that half",
    "std": "each pixel's squared distance from the slice mean, scaled to its largest value; "
    "the mean of the unscaled map is the variance, whose square root is the texture",
    "edge_density": "the rule's Canny edge map (cv2.Canny, thresholds 50 and 150); the "
    "measurement is the share of edge pixels",
}
# Which measurements feed each of the rule's inputs (v2), with their weights inside it.
COMPONENTS: dict[str, dict[str, float]] = {
    "brightness": dict(V2["brightness_weights"]),
    "texture": {"std": 1.0},
    "edge_density": {"edge_density": 1.0},
}
CUT_NAMES = ("AS positive", *STAGE_NAMES[1:])


@dataclass(frozen=True)
class Measurement:
    """One measurement of the rule on the slice, and the pixel map it is computed from.

    Attributes:
        name: ``mean``, ``lower_mean``, ``std`` or ``edge_density``.
        label: a human name.
        value: the measurement in the rule's units (grey levels 0-255; a share for edges).
        unit: the unit, in words.
        map: (H, W) float32 in [0, 1], the pixels the measurement is made of.
        note: what the map shows and how the value follows from it.
    """

    name: str
    label: str
    value: float
    unit: str
    map: np.ndarray
    note: str


@dataclass(frozen=True)
class RuleInput:
    """One of the rule's weighted inputs and its share of the severity score.

    Attributes:
        name: ``brightness``, ``texture`` or ``edge_density``.
        label: a human name.
        value: the raw input (brightness mixes two measurements; see ``components``).
        percentile: mid-rank percentile of ``value`` among the rule group's training slices,
            in [0, 1] (the scale the weights apply to).
        weight: the rule's weight of this input in the severity score.
        contribution: ``weight * percentile``; the contributions add up to the score.
        components: measurement name -> its weight inside this input.
    """

    name: str
    label: str
    value: float
    percentile: float
    weight: float
    contribution: float
    components: dict[str, float]


@dataclass(frozen=True)
class CutPoint:
    """A threshold on a severity score: the level named is reached above ``value``."""

    name: str
    value: float
    crossed: bool


class _NamedAnswer:
    """``status`` and ``stage`` names of an answer's ``status_index`` and ``stage_index``."""

    status_index: int
    stage_index: int

    @property
    def status(self) -> str:
        return AS_STATUS_NAMES[self.status_index]

    @property
    def stage(self) -> str:
        return STAGE_NAMES[self.stage_index]


@dataclass(frozen=True)
class RuleExplanation(_NamedAnswer):
    """A slice scored by the fitted labelling rule (v2), in its own terms.

    Attributes:
        rule_version: the rule's version (``v2``).
        group: the normalisation group whose training slices rank the features (``*``: all
            training slices pooled, used for a slice of unknown source).
        measurements: the four measurements, with their pixel maps.
        inputs: the rule's weighted inputs; their contributions add up to ``score``.
        score: the rule's severity score, in [0, 1].
        cut_points: AS positive, Early, Moderate, Advanced, in increasing order.
        status_index: 0 negative, 1 positive (the score crossed the first cut point).
        stage_index: 0 Normal .. 3 Advanced (stage cut points crossed; Normal when negative).
    """

    rule_version: str
    group: str
    measurements: list[Measurement]
    inputs: list[RuleInput]
    score: float
    cut_points: list[CutPoint]
    status_index: int
    stage_index: int


@dataclass(frozen=True)
class ModelSeverity(_NamedAnswer):
    """The network's own severity score, its learnt cut points and what it predicts.

    Attributes:
        score: the ``severity_score`` layer's output (an unbounded log-odds scale).
        cut_points: the ordinal heads' learnt cut points (AS positive, Early, Moderate,
            Advanced), which ``score`` crossed.
        status_index: the predicted AS status (argmax of the status head).
        stage_index: the predicted stage (argmax of the stage head).
        status_probabilities: the status head's probabilities.
        stage_probabilities: the stage head's probabilities.
        sources: the probability of each training source, for a model that recognises the
            slice's source first (``harmonized_ordinal``); empty for the others.
    """

    score: float
    cut_points: list[CutPoint]
    status_index: int
    stage_index: int
    status_probabilities: list[float]
    stage_probabilities: list[float]
    sources: dict[str, float] = field(default_factory=dict)


def crossed_cuts(score: float, cuts: Sequence[float]) -> list[CutPoint]:
    """Name the cut points (AS positive, Early, Moderate, Advanced) and say which ``score``
    is strictly above, as the rule decides (``score > cut``)."""
    if len(cuts) != len(CUT_NAMES):
        raise ValueError(f"expected {len(CUT_NAMES)} cut points, got {len(cuts)}")
    return [
        CutPoint(name, float(c), bool(score > c)) for name, c in zip(CUT_NAMES, cuts, strict=True)
    ]


def feature_maps(image: np.ndarray) -> dict[str, np.ndarray]:
    """The pixel map behind each measurement of the rule.

    Args:
        image: (H, W) preprocessed slice, float in [0, 1] (or uint8).

    Returns:
        Measurement name -> (H, W) float32 map in [0, 1] (see ``MAP_NOTES``).
    """
    img = rule_slice(image)
    grey = img.astype(np.float32) / 255.0
    lower = grey.copy()
    lower[: img.shape[0] // 2] = 0.0
    spread = np.square(img.astype(np.float64) - float(np.mean(img)))
    peak = float(spread.max())
    spread = spread / peak if peak > 0 else np.zeros_like(spread)
    return {
        "mean": grey,
        "lower_mean": lower,
        "std": spread.astype(np.float32),
        "edge_density": edge_map(img).astype(np.float32),
    }


def explain_features(
    image: np.ndarray, rule: LabelRule, source: str = GLOBAL_GROUP
) -> RuleExplanation:
    """Score one slice with the fitted rule and break the score down by feature.

    Args:
        image: (H, W) preprocessed slice, float in [0, 1] (or uint8); the rule was fitted on
            256x256 slices.
        rule: the fitted rule (version ``v2``: the one with an additive score).
        source: the slice's source (see :func:`rule_source`); unknown sources (the default)
            are ranked among all training slices, as the rule itself does.

    Returns:
        The :class:`RuleExplanation`; its status and stage are those ``rule.apply`` gives.

    Raises:
        ValueError: a rule version without an additive severity score (``v1``).
    """
    if rule.version != "v2":
        raise ValueError(f"rule {rule.version} has no weighted severity score to break down")
    raw = image_features(image)
    maps = feature_maps(image)
    measurements = [
        Measurement(k, LABELS[k], float(raw[k]), UNITS[k], maps[k], MAP_NOTES[k])
        for k in MEASUREMENTS
    ]
    ranks = rule.normalized([raw], [source])
    weights = V2["combined_weights"]
    inputs = []
    for k in RULE_INPUTS:
        comps = dict(COMPONENTS[k])
        value = sum(w * raw[m] for m, w in comps.items())
        pct = float(ranks[k][0])
        weight = float(weights[k])
        inputs.append(RuleInput(k, LABELS[k], float(value), pct, weight, weight * pct, comps))
    # The rule's own score and labels; the contributions above add up to this score.
    score = float(rule.score([raw], [source])[0])
    status, stage = rule.apply([raw], [source])
    cuts = crossed_cuts(score, [rule.thresholds["positive"], *rule.thresholds["stage"]])
    return RuleExplanation(
        rule_version=rule.version,
        group=rule.group_for(source),
        measurements=measurements,
        inputs=inputs,
        score=score,
        cut_points=cuts,
        status_index=int(status[0]),
        stage_index=int(stage[0]),
    )


_SEVERITY_MODELS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _compiled(sub: Any) -> Any:
    """``sub`` as one traced graph under TensorFlow (its Canny hysteresis loop runs about 10x
    slower eagerly); other back ends call it as it is."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return sub
    import tensorflow as tf

    shape = [None, *sub.inputs[0].shape[1:]]
    fn = tf.function(
        lambda x: sub(x, training=False),
        input_signature=[tf.TensorSpec(shape, tf.float32)],
        reduce_retracing=True,
    )
    return lambda inputs: fn(tf.constant(inputs[0]))


def _severity_model(model: Any) -> tuple[Any, bool]:
    """The model with its severity score (and source probabilities, when it recognises the
    source) as extra outputs, built once per model; and whether it recognises the source."""
    import keras

    from ml.models.harmonized_ordinal import RECOGNIZER
    from ml.models.ordinal_cnn import SCORE_LAYER

    cached = _SEVERITY_MODELS.get(model)
    if cached is None:
        names = {layer.name for layer in model.layers}
        extra = [model.get_layer(RECOGNIZER).output] if RECOGNIZER in names else []
        sub = keras.Model(
            model.inputs, [model.get_layer(SCORE_LAYER).output, *model.outputs, *extra],
            name=f"{model.name}_severity",
        )  # fmt: skip
        cached = (_compiled(sub), bool(extra))
        _SEVERITY_MODELS[model] = cached
    return cached


def recognised_sources(manifest: Any) -> list[str]:
    """The source names a model's source recogniser was fitted to (slot order), from its
    manifest's training record; empty when it has none (or was never trained)."""
    stages = manifest.training.stages if manifest.training is not None else []
    for stage in reversed(stages):
        sources = (stage.get("adapted") or {}).get("source_recognizer", {}).get("sources")
        if sources:
            return [str(name) for name in sources]
    return []


def model_severity(
    model: Any, image: np.ndarray, source_names: Sequence[str] = ()
) -> ModelSeverity:
    """The network's severity score for one slice, its learnt cut points and its prediction.

    Args:
        model: a model whose spec has ``rule_features`` (layers ``severity_score`` and
            ``ordinal``; outputs ``[binary_output, stage_output]``).
        image: (S, S) preprocessed slice at the model's input size, float in [0, 1].
        source_names: the names of the model's source-recogniser slots
            (:func:`recognised_sources`); without them no source is reported.

    Returns:
        The :class:`ModelSeverity`.
    """
    import keras

    from ml.models.ordinal_cnn import ORDINAL_LAYER

    sub, has_sources = _severity_model(model)
    x = np.asarray(image, np.float32)[None, :, :, None]
    outs = [np.asarray(keras.ops.convert_to_numpy(t)) for t in sub([x])]
    score, p_status, p_stage = outs[:3]
    cuts = np.asarray(keras.ops.convert_to_numpy(model.get_layer(ORDINAL_LAYER).cuts()))
    sources: dict[str, float] = {}
    if has_sources and source_names:
        probs = outs[3][0]
        sources = {str(n): float(probs[i]) for i, n in enumerate(source_names)}
    s = float(score.reshape(-1)[0])
    return ModelSeverity(
        score=s,
        cut_points=crossed_cuts(s, [float(c) for c in cuts]),
        status_index=int(np.argmax(p_status[0])),
        stage_index=int(np.argmax(p_stage[0])),
        status_probabilities=[float(p) for p in p_status[0]],
        stage_probabilities=[float(p) for p in p_stage[0]],
        sources=sources,
    )


def rule_source(sources: dict[str, float], rule: LabelRule, min_probability: float = 0.5) -> str:
    """The source to rank a slice's features in: the recognised one when the model is at least
    ``min_probability`` sure and the rule has a group for it, else ``*`` (all training slices
    pooled, as the rule does for any unknown source)."""
    if sources:
        name, p = max(sources.items(), key=lambda kv: kv[1])
        if p >= min_probability and rule.group_for(name) == name:
            return name
    return GLOBAL_GROUP


@dataclass(frozen=True)
class FeatureExplanation:
    """A rule-feature model's decision next to the rule it learnt, for one slice."""

    rule: RuleExplanation
    model: ModelSeverity

    @property
    def agrees(self) -> bool:
        """The model predicts the status and stage the rule gives."""
        return (self.rule.status_index, self.rule.stage_index) == (
            self.model.status_index,
            self.model.stage_index,
        )


def explain_rule_model(
    model: Any,
    model_input: np.ndarray,
    rule_input: np.ndarray,
    rule: LabelRule,
    source_names: Sequence[str] = (),
) -> FeatureExplanation:
    """The network's own answer and the rule's, broken down by feature, for one slice.

    Args:
        model: a model whose spec has ``rule_features``.
        model_input: the slice at the model's input size, float in [0, 1].
        rule_input: the slice the rule measures (256x256, float in [0, 1]).
        rule: the fitted rule that labelled the model's training data.
        source_names: the model's source-recogniser slot names (:func:`recognised_sources`).

    Returns:
        The :class:`FeatureExplanation`.
    """
    severity = model_severity(model, model_input, source_names)
    return FeatureExplanation(
        explain_features(rule_input, rule, rule_source(severity.sources, rule)), severity
    )
