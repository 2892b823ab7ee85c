"""Training helpers around the model's layers: cached measurements, adaptation, optimizer state.

Weightless layers that read only the image (the rule features' Canny, histograms) cost far
more than the rest of the small ordinal CNNs: training computes their outputs once per stage
(:func:`precompute`) and fits a view of the model that takes them as inputs (:func:`fit_view`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def carry_optimizer_state(old, new, variables) -> int:
    """Copy Adam's step count and moment estimates from the previous stage's optimizer ``old``
    into ``new`` (built here for ``variables``), leaving ``new``'s learning rate as configured.

    A fresh Adam's first steps are full-size (its bias-corrected moments start from one
    gradient), which knocked the design's un-normalised U-Net back to an all-background output
    at the 256 px stage; continuing the moments avoids that jolt. The stages share their weight
    shapes (fully convolutional), so the optimizer variables match one to one. Returns how many
    variables were copied (0 when there was nothing to carry).
    """
    if old is None or not getattr(old, "built", False):
        return 0
    new.build(variables)
    skip = {id(v) for v in (getattr(new, "_learning_rate", None),) if v is not None}
    pairs = [
        (a, b) for a, b in zip(new.variables, old.variables, strict=False) if id(a) not in skip
    ]
    if len(new.variables) != len(old.variables) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in pairs
    ):
        logger.warning("optimizer state not carried over: the stages' variables differ")
        return 0
    for a, b in pairs:
        a.assign(b)
    return len(pairs)


def fit_view(model, names: tuple[str, ...]):
    """The model trained on cached outputs of its weightless input layers ``names``.

    Returns the model itself when ``names`` is empty; otherwise a functional model sharing all
    its layers whose inputs are the image and those layers' outputs.
    """
    import keras

    if not names:
        return model
    outputs = [model.get_layer(n).output for n in names]
    return keras.Model([model.inputs[0], *outputs], model.outputs, name=f"{model.name}_fit")


def precompute(model, names: tuple[str, ...], images: np.ndarray) -> list[np.ndarray]:
    """Outputs of the weightless layers ``names`` for ``images`` (cached training inputs)."""
    import keras

    if not names:
        return []
    feature_model = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    out = feature_model.predict(images, batch_size=32, verbose=0)
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


def adapt_layers(
    model,
    names: tuple[str, ...],
    images: np.ndarray,
    cached: tuple[str, ...],
    extras,
    sourced: tuple[np.ndarray, list[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Adapt the layers ``names`` in order before fitting; returns what each was adapted on.

    A keras ``Normalization`` layer takes the mean and variance of its inputs on the fit
    ``images`` (from the cached measurements ``extras`` when they suffice). A layer with
    ``adapts_to_sources`` (site harmonisation) takes ``sourced`` = (images, their cached
    measurements, their source names): the whole training split, whose images and scanner
    names (never its labels) may shape the preprocessing.
    """
    import keras

    record: dict[str, Any] = {}
    for name in names:
        layer = model.get_layer(name)
        per_source = bool(getattr(layer, "adapts_to_sources", False))
        if per_source and sourced is None:
            raise ValueError(f"{name} adapts to source names, and none were given")
        layer_images, layer_extras = (images, extras)
        if per_source and sourced is not None:
            layer_images, layer_extras = sourced[0], sourced[1]
        if cached:
            sources = [model.get_layer(n).output for n in cached]
            inputs, batch = layer_extras, 256
        else:
            sources, inputs, batch = model.inputs, layer_images, 32
        wanted = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        outputs = []
        for tensor in wanted:
            known = [i for i, t in enumerate(sources) if t is tensor]
            if known:  # a cached measurement itself
                outputs.append(np.asarray(inputs[known[0]]))
                continue
            outputs.append(np.asarray(
                keras.Model(sources, tensor).predict(inputs, batch_size=batch, verbose=0)
            ))  # fmt: skip
        values = outputs if isinstance(layer.input, (list, tuple)) else outputs[0]
        if per_source:
            assert sourced is not None
            names_seen = layer.adapt(values, sourced[2])
            record[name] = {"images": int(len(sourced[2])), "sources": names_seen}
        else:
            layer.adapt(np.asarray(values))
            record[name] = {"images": int(len(layer_images))}
        logger.info("adapted %s to %s", name, record[name])
    return record
