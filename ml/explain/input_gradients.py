"""The gradient of a head's class probability with respect to the input image (TensorFlow
plumbing for integrated gradients, :func:`ml.explain.perturbation.integrated_gradients`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ml.explain.cam_graph import _cached, _signature, resolve_head


def make_gradient_fn(model: Any, head: str | None) -> Callable[[np.ndarray, int], np.ndarray]:
    """``fn(images (N,S,S,1), class_index) -> d p(class) / d image`` (N,S,S,1), compiled once
    per (model, head) and cached on the model."""
    idx, _, _ = resolve_head(model, head)
    compiled = _cached(model, ("input-gradient", idx), lambda: _build(model, idx))

    def fn(images: np.ndarray, class_index: int) -> np.ndarray:
        batch = np.asarray(images, dtype=np.float32)
        return np.asarray(compiled(batch, np.int32(class_index)))

    return fn


def _build(model: Any, idx: int) -> Any:
    import weakref

    import keras
    import tensorflow as tf

    model_ref = weakref.ref(model)

    @tf.function(
        input_signature=[_signature(model), tf.TensorSpec([], tf.int32)], reduce_retracing=True
    )
    def fn(images: Any, class_index: Any) -> Any:
        model = model_ref()
        if model is None:
            raise RuntimeError("the explained model no longer exists")
        with tf.GradientTape() as tape:
            tape.watch(images)
            out = keras.tree.flatten(model(images, training=False))[idx]
            score = tf.gather(tf.cast(out, tf.float32), class_index, axis=1)
        return tape.gradient(score, images)

    return fn
