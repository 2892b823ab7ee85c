"""Attention rollout for the spatial-token Transformer of hybrid v3.

Rollout (Abnar & Zuidema, 2020) follows attention through the layers: for each block, average
the heads, add the identity (the residual connection carries each token's own information
forward), renormalise every row to sum to 1, then multiply the blocks' matrices from the first
to the last: ``R = A_L' @ ... @ A_1'``. Every row of ``R`` still sums to 1; row ``i`` says how
much each input token contributed to output token ``i``.

The map: with a class token (hybrid v3 prepends one at index 0 and classifies from it), the
class token's row over the spatial tokens, ``R[0, 1:]``, renormalised to sum to 1. Without one,
the mean of all rows (also summing to 1). The token weights are laid out on the backbone's
(S/32, S/32) grid, scaled to peak 1 and resized bilinearly onto the image.

The attention weights come from the Transformer blocks' second output (the manifest's
``attention_layers``), captured in the same compiled pass that runs the model. Rollout does not
depend on the head: both heads read the same class token, so ``binary_output`` and
``stage_output`` share one attention map (Grad-CAM is the head-specific explanation).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.explain.cam_graph import _cached, _signature, find_layer_path, run_with_capture
from ml.explain.gradcam import _as_batch, normalize_maps


@dataclass
class RolloutResult:
    """Attention rollout for a batch.

    Attributes:
        heatmaps: (N, S, S) float32 in [0, 1] (peak 1), on the image.
        token_weights: (N, T_spatial) rollout weights of the spatial tokens, each row sums to 1.
        grid: (rows, cols) of the spatial token grid.
        joint: (N, T, T) rollout matrices (rows sum to 1).
        has_class_token: whether token 0 was treated as the class token.
        layers: the attention layers used, first to last.
    """

    heatmaps: np.ndarray
    token_weights: np.ndarray
    grid: tuple[int, int]
    joint: np.ndarray
    has_class_token: bool
    layers: list[str]


def attention_layer_names(model: Any, manifest: dict[str, Any] | None = None) -> list[str]:
    """Attention layers from the manifest, else every layer that returns attention weights."""
    names = list((manifest or {}).get("attention_layers") or [])
    if names:
        return names
    return [
        lyr.name for lyr in getattr(model, "layers", []) if getattr(lyr, "return_attention", False)
    ]


def rollout(attentions: list[np.ndarray], add_identity: bool = True) -> np.ndarray:
    """Attention rollout over layers.

    Args:
        attentions: per layer, (N, heads, T, T) or (N, T, T) attention weights, first layer first.
        add_identity: add the identity before renormalising (the residual path).

    Returns:
        (N, T, T) float64 joint attention; each row sums to 1.
    """
    joint = None
    for att in attentions:
        a = np.asarray(att, dtype=np.float64)
        if a.ndim == 4:
            a = a.mean(axis=1)  # average the heads
        if a.ndim != 3 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"attention weights must be (N, [heads,] T, T), got {a.shape}")
        a = np.nan_to_num(a, nan=0.0)
        if add_identity:
            a = a + np.eye(a.shape[-1])[None]
        rows = a.sum(axis=-1, keepdims=True)
        a = np.where(rows > 0, a / np.where(rows > 0, rows, 1.0), 1.0 / a.shape[-1])
        joint = a if joint is None else a @ joint
    if joint is None:
        raise ValueError("no attention weights given")
    return joint


def token_map(joint: np.ndarray, has_class_token: bool) -> np.ndarray:
    """(N, T_spatial) weights of the spatial tokens from joint attention, each row summing to 1."""
    w = joint[:, 0, 1:] if has_class_token else joint.mean(axis=1)
    total = w.sum(axis=1, keepdims=True)
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)


def _grid_for(n_tokens: int) -> tuple[tuple[int, int], bool]:
    """(grid, has_class_token) for a token count: a square grid, or a square plus one token."""
    for extra, has_cls in ((1, True), (0, False)):
        g = int(round(np.sqrt(n_tokens - extra)))
        if g > 0 and g * g == n_tokens - extra:
            return (g, g), has_cls
    raise ValueError(f"{n_tokens} tokens do not form a square grid (with or without a class token)")


def make_attention_fn(model: Any, layer_names: list[str]):
    """Compiled ``fn(images) -> list of (N, heads, T, T)`` attention weights, cached per model."""
    import keras
    import tensorflow as tf

    key = ("attention", tuple(layer_names))

    def build():
        paths = [find_layer_path(model, name) for name in layer_names]
        capture = {id(p[-1]): f"out:att{i}" for i, p in enumerate(paths)}
        inside = {id(lyr) for p in paths for lyr in p[:-1]}
        model_ref = weakref.ref(model)

        @tf.function(input_signature=[_signature(model)], reduce_retracing=True)
        def fn(images: Any) -> list[Any]:
            store: dict[str, Any] = {}
            run_with_capture(model_ref(), images, capture, inside, store)
            out = []
            for i in range(len(paths)):
                value = store[f"att{i}"]
                flat = keras.tree.flatten(value)
                if len(flat) < 2:
                    raise ValueError(
                        f"layer {layer_names[i]!r} does not return attention weights "
                        "(build it with return_attention=True)"
                    )
                out.append(tf.cast(flat[1], tf.float32))
            return out

        return fn

    return _cached(model, key, build)


def attention_rollout(
    model: Any,
    images: np.ndarray,
    layer_names: list[str] | None = None,
    add_identity: bool = True,
) -> RolloutResult:
    """Attention-rollout heatmaps for a batch of images (one forward pass).

    Args:
        model: a hybrid v3 model (Transformer blocks built with ``return_attention=True``).
        images: (N, S, S, 1) float32 in [0, 1] (a single (S, S) image is accepted).
        layer_names: attention layers (manifest ``attention_layers``); found when ``None``.
        add_identity: add the residual identity before renormalising (standard rollout).

    Returns:
        A :class:`RolloutResult` whose heatmaps are image-sized, finite and in [0, 1].
    """
    batch = _as_batch(images)
    names = list(layer_names or attention_layer_names(model))
    if not names:
        raise ValueError(f"model {model.name!r} has no attention layers to roll out")
    fn = make_attention_fn(model, names)
    atts = [a.numpy() for a in fn(batch)]
    joint = rollout(atts, add_identity=add_identity)
    grid, has_cls = _grid_for(joint.shape[-1])
    weights = token_map(joint, has_cls)
    maps = weights.reshape(-1, *grid)
    heatmaps = normalize_maps(maps, batch.shape[1:3])
    return RolloutResult(heatmaps, weights, grid, joint, has_cls, names)
