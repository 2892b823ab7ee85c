"""Rule-feature explanations: a model that learnt the labelling rule, explained in its terms.

A model whose architecture spec says ``rule_features`` (the ordinal models) measures the rule's
features in its graph. When its bundle ships the fitted rule that labelled its training data
(``label_rule.json``), each explanation of it also carries the rule's breakdown of the slice
(features, weights, contributions, cut points, pixel maps) beside the model's own severity
score (:mod:`ml.explain.features`). Other models, and bundles without a rule, get none.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from backend.inference.registry import ModelEntry
from backend.inference.runner import InferenceRunner
from backend.services.pipeline import Decoded

if TYPE_CHECKING:
    from ml.data.labels import LabelRule
    from ml.explain import features as fx

log = logging.getLogger(__name__)


@lru_cache(maxsize=64)
def _rule_at(path: str, weights_sha256: str | None) -> LabelRule | None:
    """The bundle's rule, read once per bundle version (a rewritten bundle has new weights)."""
    from ml.bundle import BundleError, read_label_rule, read_manifest

    try:
        rule = read_label_rule(path, read_manifest(path))
    except BundleError as exc:
        log.warning("no rule-feature explanations for %s: %s", path, exc)
        return None
    if rule is not None and rule.version != "v2":
        log.info("%s: rule %s has no weighted score to explain", path, rule.version)
        return None
    return rule


def label_rule(entry: ModelEntry) -> LabelRule | None:
    """The fitted v2 rule a rule-feature model learnt, or None (other models, no rule)."""
    from ml.models import spec

    if not spec(entry.architecture).rule_features:
        return None
    return _rule_at(str(Path(entry.path)), entry.manifest.weights.sha256)


async def explain_rule_features(
    runner: InferenceRunner, entry: ModelEntry, decoded: Decoded
) -> fx.FeatureExplanation | None:
    """The rule's breakdown of the slice and the model's own severity score (None when the
    model is not a rule-feature model or ships no rule). Runs on the model's thread."""
    rule = label_rule(entry)
    if rule is None:
        return None
    from ml.explain.features import explain_rule_model, recognised_sources

    return await runner.call(
        entry,
        explain_rule_model,
        entry.model,
        decoded.input_for(entry.input_size),
        decoded.display,
        rule,
        recognised_sources(entry.manifest),
    )
