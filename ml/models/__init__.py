"""The architectures: one module each, each exporting one :class:`~ml.models.spec.ModelSpec`.

``SPECS`` collects them; :func:`spec` looks one up and :func:`build_model` builds it. Every
builder takes a config dict (keys may shrink a model for tests) and returns a ``keras.Model``
whose layers are all named. Importing this package registers the custom layers.
"""

from __future__ import annotations

from typing import Any

import ml.layers  # noqa: F401  (registers the custom layers for deserialisation)
from ml.models import (
    attention_unet,
    attention_unet_lite,
    harmonized_ordinal,
    hybrid_v1,
    hybrid_v2,
    hybrid_v3,
    ordinal_cnn,
    simple_cnn,
    stats_cnn,
)
from ml.models.flops import count_flops
from ml.models.spec import TASKS, ModelSpec, Task

SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        attention_unet.SPEC,
        attention_unet_lite.SPEC,
        simple_cnn.SPEC,
        hybrid_v1.SPEC,
        hybrid_v2.SPEC,
        hybrid_v3.SPEC,
        stats_cnn.SPEC,
        ordinal_cnn.SPEC,
        harmonized_ordinal.SPEC,
    )
}
ARCHITECTURES: tuple[str, ...] = tuple(SPECS)


def spec(architecture: str) -> ModelSpec:
    """The spec of an architecture.

    Raises:
        ValueError: unknown architecture (the message lists the known ones).
    """
    try:
        return SPECS[architecture]
    except KeyError:
        known = ", ".join(ARCHITECTURES)
        raise ValueError(f"unknown architecture {architecture!r}; known: {known}") from None


def build_model(architecture: str, cfg: dict[str, Any] | None = None):
    """Build a model by architecture name.

    Args:
        architecture: one of :data:`ARCHITECTURES`.
        cfg: builder config overrides (see each module's ``DEFAULTS``).

    Returns:
        A randomly initialised ``keras.Model``.
    """
    return spec(architecture).build(cfg)


__all__ = [
    "ARCHITECTURES",
    "SPECS",
    "TASKS",
    "ModelSpec",
    "Task",
    "build_model",
    "count_flops",
    "spec",
]
