"""Start a model from another bundle's layers: those of the same name and weight shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def transfer_layers(bundle_dir: str | Path, model: Any) -> tuple[list[str], list[str]]:
    """Copy the weights of every layer of ``model`` that the bundle has with the same name and
    weight shapes; the others keep their initialisation.

    Args:
        bundle_dir: a bundle folder (its weights are verified against the manifest).
        model: the Keras model to start.

    Returns:
        (names of the layers carried over, names of the layers with weights that were not).

    Raises:
        ValueError: no layer with weights matched (a config pointing at the wrong bundle).
    """
    from ml.bundle import load_bundle

    source = load_bundle(bundle_dir).model
    theirs = {layer.name: layer for layer in source.layers}
    shared: list[str] = []
    new: list[str] = []
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        match = theirs.get(layer.name)
        given = match.get_weights() if match is not None else []
        if [w.shape for w in given] == [w.shape for w in weights]:
            layer.set_weights(given)
            shared.append(layer.name)
        else:
            new.append(layer.name)
    if not shared:
        raise ValueError(f"{bundle_dir}: no layer of the model matches the bundle's layers")
    return shared, new
