"""Full-resolution refinement of an upsampled probability map: a residual on its logit."""

from __future__ import annotations

import math

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="spondyscan")
class LogitResidual(layers.Layer):
    """``sigmoid(logit(p) + delta)``: adds a correction to a probability map in logit space.

    With ``delta = 0`` the output is ``p`` (up to the clipping of ``p`` to ``[eps, 1 - eps]``), so a
    refinement branch whose last convolution starts at zero starts as the identity and a model
    trained without it keeps its outputs until the branch learns something.
    """

    def __init__(self, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.eps = float(eps)

    def call(self, inputs):
        prob, delta = inputs
        p = ops.clip(ops.cast(prob, delta.dtype), self.eps, 1.0 - self.eps)
        return ops.sigmoid(ops.log(p) - ops.log1p(-p) + delta)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


@keras.saving.register_keras_serializable(package="spondyscan")
class ImageStandardize(layers.Layer):
    """Each image to zero mean and unit standard deviation over its pixels.

    Weightless. A multiplicative change of brightness (a darker scanner, another window) leaves the
    output unchanged, so a segmenter behind it need not learn each source's grey levels.
    """

    def __init__(self, eps: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.eps = float(eps)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        std = ops.std(x, axis=(1, 2, 3), keepdims=True)
        return (x - mean) / (std + self.eps)

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_flops(self, input_shapes) -> int:
        # mean, squared deviations, std, subtract, divide: five operations per pixel
        return 5 * math.prod(int(d) for d in input_shapes[1:])

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}
