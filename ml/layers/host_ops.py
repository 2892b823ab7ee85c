"""Two steps of the rule-feature layers that TensorFlow's CPU kernels run slowly, done on the host.

The rule-feature models (``ordinal_cnn``, ``harmonized_ordinal``) measure each slice the way the
labelling rule does, and two of those measurements dominate their forward pass on TensorFlow:

- **Quantiles** (:func:`row_quantiles`): ``keras.ops.quantile`` sorts every row with the
  backend's sort, and TensorFlow's CPU sort (a full ``top_k``) took about 55 ms for 22 slices of
  256 x 256 on a 2-core machine, where NumPy's vectorised sort took about 4 ms. Here NumPy sorts
  inside the graph and the quantiles are read with exactly ``ops.quantile``'s linear
  interpolation (same values); gradients flow to the pixel each sorted value came from, as
  through TensorFlow's own sort. A few quantiles known when the graph is built (the scanner
  fingerprint's 99th and 99.9th percentiles: 4 ranks) are picked with ``np.partition``
  instead, about 3x faster than the sort, with the same values and gradients.
- **Canny hysteresis** (:func:`connected_to_seeds`): growing the strong edges through the weak
  ones by repeated 3x3 dilation takes one graph pass per pixel of the longest chain (up to about
  140 on lumbar slices: about 130 ms for 22 slices). The same pixels are the 8-connected
  components of the weak map that hold a strong pixel, which OpenCV labels in well under a
  millisecond per slice.

On other backends (JAX on an accelerator) the backend-neutral ops run unchanged. A graph that
calls NumPy cannot be compiled by XLA, so the layers that use these say ``supports_jit = False``
on TensorFlow (:func:`supports_jit`).
"""

from __future__ import annotations

from typing import Any

import cv2
import keras
import numpy as np
from keras import ops


def host_ops_active() -> bool:
    """Whether these steps run on the host (the TensorFlow backend)."""
    return bool(keras.backend.backend() == "tensorflow")


def supports_jit() -> bool:
    """Whether a layer using these steps can be XLA-compiled on this backend."""
    return not host_ops_active()


def row_quantiles(x: Any, q: Any) -> Any:
    """``(N, M)`` rows -> ``(N, len(q))`` quantiles, as ``ops.transpose(ops.quantile(x, q, 1))``.

    Args:
        x: a 2-D float tensor, one row per image.
        q: 1-D quantiles in [0, 1] (a tensor: its own dtype's values are used, as there).
    """
    if not host_ops_active():
        return ops.transpose(ops.quantile(x, q, axis=1))
    import tensorflow as tf

    x = tf.cast(x, tf.float32)
    few = _few_ranks(x, q)
    if few is not None:
        ranks, lower, higher, fraction = few
        return _interpolated(x, _ranked_values(x, ranks), lower, higher, fraction)
    sorted_x = _sorted_rows(x)
    n = tf.shape(x)[-1]
    # ops.quantile's "linear" method, index arithmetic in float64 as there.
    exact = (tf.cast(n, tf.float64) - 1.0) * tf.cast(tf.convert_to_tensor(q), tf.float64)
    higher = tf.clip_by_value(tf.cast(tf.math.ceil(exact), tf.int32), 0, n - 1)
    lower = tf.maximum(higher - 1, 0)
    higher = tf.minimum(lower + 1, n - 1)
    fraction = tf.cast(tf.cast(higher, tf.float64) - exact, tf.float32)
    return _interpolated(x, sorted_x, lower, higher, fraction)


def _interpolated(x: Any, values: Any, lower: Any, higher: Any, fraction: Any) -> Any:
    """``ops.quantile``'s linear interpolation between the columns ``lower`` and ``higher`` of
    ``values`` (sorted rows, or the picked ranks); NaN for a row of ``x`` holding a NaN."""
    import tensorflow as tf

    out = (
        tf.gather(values, higher, axis=-1) * (1.0 - fraction)
        + tf.gather(values, lower, axis=-1) * fraction
    )
    has_nan = tf.reduce_any(tf.math.is_nan(x), axis=1, keepdims=True)
    return tf.where(has_nan, tf.constant(np.nan, tf.float32), out)


# Up to this many order statistics per row are picked with np.partition (about 3x faster than
# a full sort for 4 of 65,536 values); more are read from a full sort.
PARTITION_MAX_RANKS = 8


def _few_ranks(x: Any, q: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(ranks, lower, higher, fraction) of ``ops.quantile``'s linear interpolation, when the row
    length and ``q`` are known when the graph is built and need few distinct ranks; else None.

    ``ranks`` are the distinct sorted positions needed; ``lower`` / ``higher`` index into them.
    """
    import tensorflow as tf

    n = x.shape[-1]
    q_value = tf.get_static_value(tf.convert_to_tensor(q))
    if n is None or q_value is None:
        return None
    # The same float64 index arithmetic as the full-sort path (and ops.quantile).
    exact = (float(n) - 1.0) * np.asarray(q_value, np.float64).reshape(-1)
    higher = np.clip(np.ceil(exact).astype(np.int64), 0, n - 1)
    lower = np.maximum(higher - 1, 0)
    higher = np.minimum(lower + 1, n - 1)
    ranks = np.unique(np.concatenate([lower, higher]))
    if len(ranks) > PARTITION_MAX_RANKS:
        return None
    fraction = (higher.astype(np.float64) - exact).astype(np.float32)
    return ranks, np.searchsorted(ranks, lower), np.searchsorted(ranks, higher), fraction


def _ranked_values(x: Any, ranks: np.ndarray) -> Any:
    """``(N, M)`` rows -> ``(N, len(ranks))``: each row's values at those sorted positions.

    The same values and gradients as a full sort read at ``ranks`` (a stable order decides
    which of several equal values gets the gradient, as there)."""
    import tensorflow as tf

    kth = np.asarray(ranks, np.int64)

    @tf.custom_gradient
    def pick(v: Any) -> Any:
        out = tf.numpy_function(
            lambda a: np.partition(a, kth, axis=1)[:, kth], [v], tf.float32, stateful=False
        )
        out.set_shape([v.shape[0], len(kth)])

        def grad(upstream: Any) -> Any:
            pixels = tf.numpy_function(
                lambda a: np.argsort(a, axis=1, kind="stable")[:, kth].astype(np.int64),
                [v],
                tf.int64,
                stateful=False,
            )
            pixels.set_shape([v.shape[0], len(kth)])
            rows = tf.broadcast_to(
                tf.range(tf.shape(v, out_type=tf.int64)[0])[:, None], tf.shape(pixels)
            )
            where = tf.stack([rows, pixels], axis=-1)
            return tf.tensor_scatter_nd_add(tf.zeros_like(v), where, upstream)

        return out, grad

    return pick(x)


def connected_to_seeds(weak: Any, strong: Any) -> Any:
    """``(N, H, W)`` float {0, 1} maps -> the pixels of ``weak`` 8-connected (through ``weak``)
    to a pixel of ``strong``, as float {0, 1}; ``strong`` must lie inside ``weak``. TensorFlow
    only (see :func:`host_ops_active`); no gradient (the result is a set of pixels)."""
    import tensorflow as tf

    out = tf.numpy_function(_np_connected_to_seeds, [weak, strong], tf.float32, stateful=False)
    out.set_shape(weak.shape)
    return out


def _np_connected_to_seeds(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    out = np.zeros(weak.shape, np.float32)
    for i in range(weak.shape[0]):
        n, labels = cv2.connectedComponents((weak[i] > 0).astype(np.uint8), connectivity=8)
        keep = np.zeros(n, bool)
        keep[labels[strong[i] > 0]] = True
        keep[0] = False  # background
        out[i] = keep[labels]
    return out


def _np_sort(a: np.ndarray) -> np.ndarray:
    return np.sort(a, axis=1)


def _np_inverse_order(a: np.ndarray) -> np.ndarray:
    """``inv[i, j]``: the position pixel ``j`` of row ``i`` takes in the sorted row."""
    # Stable: among equal values the lower index comes first, as in TensorFlow's sort, so the
    # gradients credit the same pixels (8-bit slices are full of ties).
    order = np.argsort(a, axis=1, kind="stable").astype(np.int64)
    inv = np.empty_like(order)
    np.put_along_axis(inv, order, np.arange(a.shape[1])[None, :], axis=1)
    return inv


def _sorted_rows(x: Any) -> Any:
    import tensorflow as tf

    @tf.custom_gradient
    def sort(v: Any) -> Any:
        out = tf.numpy_function(_np_sort, [v], tf.float32, stateful=False)
        out.set_shape(v.shape)

        def grad(upstream: Any) -> Any:
            # sorted[i, k] = v[i, order[i, k]]  =>  d v[i, j] = upstream[i, inv[i, j]].
            inv = tf.numpy_function(_np_inverse_order, [v], tf.int64, stateful=False)
            inv.set_shape(v.shape)
            return tf.gather(upstream, inv, batch_dims=1)

        return out, grad

    return sort(x)
