"""The feature-rule's own measurements, computed inside the network with backend-neutral ops.

:class:`RuleFeatures` maps a (N, H, W, 1) slice in [0, 1] to the four raw features of
:func:`ml.data.labels.image_features`: mean, lower-half mean, standard deviation (grey levels
/ 255) and the Canny edge density. The edge map reproduces OpenCV's ``cv2.Canny(img, 50, 150)``
(3x3 Sobel with replicated borders, L1 gradient magnitude, four-direction non-maximum
suppression with OpenCV's tie rules, 8-connected hysteresis), so a network given this layer
measures what the labelling rule measured, instead of approximating an edge detector from
pixels. The layer has no weights; it is the hand-crafted half of a radiomics-style model.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from ml.layers.host_ops import (
    connected_to_seeds,
    host_ops_active,
    row_quantiles,
    supports_jit,
)

CANNY_LOW = 50.0
CANNY_HIGH = 150.0
# OpenCV's tangent of 22.5 degrees in 15-bit fixed point: tan22 = round(0.41421356 * 2**15).
_TG22 = 13573.0
_SHIFT = 32768.0
HYSTERESIS_MAX_ITERATIONS = 512


def _shift(x, dy: int, dx: int):
    """``out[:, i, j] = x[:, i + dy, j + dx]``, zero outside (neighbour lookup)."""
    h, w = x.shape[1], x.shape[2]
    pad = ops.pad(x, [[0, 0], [1, 1], [1, 1]])
    return pad[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def _sobel(img):
    """OpenCV's 3x3 Sobel derivatives (dx along columns, dy along rows), replicated border."""
    h, w = img.shape[1], img.shape[2]
    p = ops.concatenate([img[:, :1], img, img[:, -1:]], axis=1)
    p = ops.concatenate([p[:, :, :1], p, p[:, :, -1:]], axis=2)

    def at(dy: int, dx: int):
        return p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    dx = (at(-1, 1) + 2.0 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2.0 * at(0, -1) + at(1, -1))
    dy = (at(1, -1) + 2.0 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2.0 * at(-1, 0) + at(-1, 1))
    return dx, dy


def canny_edges(img, low: float = CANNY_LOW, high: float = CANNY_HIGH):
    """``cv2.Canny(img, low, high)`` (L1 gradient) as a {0, 1} float map.

    Args:
        img: (N, H, W) float tensor of integer grey levels 0..255.
        low, high: hysteresis thresholds (OpenCV floors them).

    Returns:
        (N, H, W) float32, 1 on edge pixels.
    """
    img = ops.cast(img, "float32")
    dx, dy = _sobel(img)
    mag = ops.abs(dx) + ops.abs(dy)
    xs, ys = ops.abs(dx), ops.abs(dy)
    tg22x = xs * _TG22
    y = ys * _SHIFT
    tg67x = tg22x + xs * (2.0 * _SHIFT)
    horizontal = y < tg22x
    vertical = ops.logical_and(ops.logical_not(horizontal), y > tg67x)
    same_sign = (dx * dy) >= 0.0  # OpenCV: s = (dx ^ dy) < 0 ? -1 : 1
    left, right = _shift(mag, 0, -1), _shift(mag, 0, 1)
    up, down = _shift(mag, -1, 0), _shift(mag, 1, 0)
    up_left, down_right = _shift(mag, -1, -1), _shift(mag, 1, 1)
    up_right, down_left = _shift(mag, -1, 1), _shift(mag, 1, -1)
    keep_h = ops.logical_and(mag > left, mag >= right)
    keep_v = ops.logical_and(mag > up, mag >= down)
    keep_d = ops.where(
        same_sign,
        ops.logical_and(mag > up_left, mag > down_right),
        ops.logical_and(mag > up_right, mag > down_left),
    )
    local_max = ops.where(horizontal, keep_h, ops.where(vertical, keep_v, keep_d))
    candidate = ops.logical_and(local_max, mag > float(int(low)))
    return _hysteresis(candidate, ops.logical_and(candidate, mag > float(int(high))))


def _hysteresis(weak, strong):
    """Pixels of ``weak`` 8-connected to a ``strong`` pixel, as a {0, 1} float map.

    Grows the strong pixels by 3x3 dilation inside the candidates until nothing changes (a
    pass per pixel of the longest chain: at most about 140 on the lumbar slices). Exact while
    no chain needs more than ``HYSTERESIS_MAX_ITERATIONS`` passes. On TensorFlow the same pixels
    come from connected components on the host (:func:`ml.layers.host_ops.connected_to_seeds`),
    exact without a limit.
    """
    weak = ops.cast(weak, "float32")
    strong = ops.cast(strong, "float32")
    if host_ops_active():
        return connected_to_seeds(weak, strong)

    def grow(edges):
        # Separable 3x3 max (rows, then columns) on zero-padded shifts: far cheaper than a
        # max-pool over a single channel.
        p = ops.pad(edges, [[0, 0], [1, 1], [0, 0]])
        rows = ops.maximum(ops.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
        p = ops.pad(rows, [[0, 0], [0, 0], [1, 1]])
        return ops.maximum(ops.maximum(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:]) * weak

    def cond(edges, previous, i):
        return ops.logical_and(
            ops.any(ops.not_equal(edges, previous)), i < HYSTERESIS_MAX_ITERATIONS
        )

    def body(edges, previous, i):
        return grow(edges), edges, i + 1

    edges, _, _ = ops.while_loop(cond, body, (grow(strong), strong, 0))
    return edges


@keras.saving.register_keras_serializable(package="spondyscan")
class RuleFeatures(layers.Layer):
    """(N, H, W, 1) in [0, 1] -> (N, 4): mean, lower-half mean, std (grey levels / 255), and
    the share of Canny edge pixels, exactly as the feature-rule labels measure them.

    The input is mapped back to integer grey levels first (``round(x * 255)``), as the rule
    reads the 8-bit slice.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_jit = supports_jit()

    def call(self, inputs):
        x = ops.round(ops.clip(ops.cast(inputs[..., 0], "float32"), 0.0, 1.0) * 255.0)
        height = x.shape[1]
        mean = ops.mean(x, axis=(1, 2))
        lower = ops.mean(x[:, height // 2 :, :], axis=(1, 2))
        std = ops.std(x, axis=(1, 2))
        edges = ops.mean(canny_edges(x), axis=(1, 2))
        return ops.stack([mean / 255.0, lower / 255.0, std / 255.0, edges], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 4)

    def count_flops(self, input_shapes) -> int:
        """Sobel, magnitude and suppression (~40 operations per pixel) plus hysteresis passes
        (about 8 per pixel and pass; ~140 passes on these slices)."""
        shape = input_shapes[0] if isinstance(input_shapes, list) else input_shapes
        return (40 + 8 * 140) * int(shape[1]) * int(shape[2])


@keras.saving.register_keras_serializable(package="spondyscan")
class IntensityQuantiles(layers.Layer):
    """(N, H, W, 1) in [0, 1] -> (N, levels): grey-level quantiles at evenly spaced levels
    between 5 % and 95 %, a compact fingerprint of the sequence and scanner the slice came from
    (T1 and T2 slices have very different histograms)."""

    def __init__(self, levels: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.levels = int(levels)
        self.supports_jit = supports_jit()

    def call(self, inputs):
        x = ops.reshape(ops.cast(inputs, "float32"), (-1, inputs.shape[1] * inputs.shape[2]))
        return row_quantiles(x, ops.linspace(0.05, 0.95, self.levels))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.levels)

    def count_flops(self, input_shapes) -> int:
        """A sort per image: about log2(H*W) comparisons per pixel."""
        shape = input_shapes[0] if isinstance(input_shapes, list) else input_shapes
        n = int(shape[1]) * int(shape[2])
        return n * max(1, n.bit_length())

    def get_config(self):
        return {**super().get_config(), "levels": self.levels}
