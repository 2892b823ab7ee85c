"""Full-resolution refinement of an upsampled probability map: a residual on its logit."""

from __future__ import annotations

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
