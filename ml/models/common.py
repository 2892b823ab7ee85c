"""Small helpers shared by the builders: config merging and the two classification heads."""

from __future__ import annotations

from typing import Any

from keras import layers

AS_STATUS_CLASSES = 2
STAGE_CLASSES = 4


def merged(defaults: dict[str, Any], cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Return ``defaults`` updated by ``cfg``, refusing keys the builder does not know."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; allowed: {sorted(defaults)}")
    out = dict(defaults)
    out.update(cfg)
    return out


def classification_heads(x):
    """The two heads every classifier shares, in the contract's output order."""
    binary = layers.Dense(AS_STATUS_CLASSES, activation="softmax", name="binary_output")(x)
    stage = layers.Dense(STAGE_CLASSES, activation="softmax", name="stage_output")(x)
    return [binary, stage]
