"""The gradient of a head's class probability with respect to the input image (TensorFlow
plumbing for integrated gradients, :func:`ml.explain.perturbation.integrated_gradients`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ml.explain.cam_graph import _cached, _signature, resolve_head


def make_gradient_fn(model: Any, head: str | None) -> Callable[[np.ndarray, int], np.ndarray]:
    """``fn(images (N,S,S,1), class_index) -> d p(class) / d image`` (N,S,S,1).

    One ``tf.function`` per model, traced once and cached on it, serves every head: the head is
    a tensor argument selecting which output's class probability is differentiated (the model
    computes all its outputs anyway), so a dual-head classifier costs one trace, not two.
    """
    idx, _, _ = resolve_head(model, head)
    compiled = _cached(model, ("input-gradient",), lambda: _build(model))

    def fn(images: np.ndarray, class_index: int) -> np.ndarray:
        batch = np.asarray(images, dtype=np.float32)
        return np.asarray(compiled(batch, np.int32(class_index), np.int32(idx)))

    return fn


def _build(model: Any) -> Any:
    import weakref

    import keras
    import tensorflow as tf

    model_ref = weakref.ref(model)

    @tf.function(
        input_signature=[
            _signature(model),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ],
        reduce_retracing=True,
    )
    def fn(images: Any, class_index: Any, head_index: Any) -> Any:
        model = model_ref()
        if model is None:
            raise RuntimeError("the explained model no longer exists")
        with tf.GradientTape() as tape:
            tape.watch(images)
            outs = [
                tf.cast(o, tf.float32) for o in keras.tree.flatten(model(images, training=False))
            ]
            # Each head's summed class probability (the gradient of a vector is that of its
            # sum); a head with fewer classes reads its last one (it is not the one selected).
            scores = [
                tf.reduce_sum(tf.gather(o, tf.minimum(class_index, tf.shape(o)[1] - 1), axis=1))
                for o in outs
            ]
            score = tf.gather(tf.stack(scores), head_index)
        return tape.gradient(score, images)

    return fn
