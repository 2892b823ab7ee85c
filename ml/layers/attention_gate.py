"""Additive attention gate of the Attention U-Net (Oktay et al. 2018), as the design draws it."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="spondyscan")
class AttentionGate(layers.Layer):
    """Gate a skip connection with a gating signal of the same spatial size.

    ``theta = Conv1x1(skip)``, ``phi = Conv1x1(gating)``,
    ``psi = sigmoid(Conv1x1(relu(theta + phi)))``, output ``skip * psi``.

    Args:
        inter_channels: channels of theta and phi.
        return_coefficients: also return the (N, H, W, 1) coefficient map ``psi`` so an
            explanation can show where the gate lets the skip through.
    """

    def __init__(self, inter_channels: int, return_coefficients: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.inter_channels = int(inter_channels)
        self.return_coefficients = bool(return_coefficients)
        self.theta = layers.Conv2D(self.inter_channels, 1, name="theta")
        self.phi = layers.Conv2D(self.inter_channels, 1, name="phi")
        self.psi = layers.Conv2D(1, 1, name="psi")

    def build(self, input_shape):
        skip_shape, gating_shape = input_shape
        self.theta.build(skip_shape)
        self.phi.build(gating_shape)
        self.psi.build((*skip_shape[:-1], self.inter_channels))

    def call(self, inputs):
        skip, gating = inputs
        joint = ops.relu(self.theta(skip) + self.phi(gating))
        coefficients = ops.sigmoid(self.psi(joint))
        gated = skip * coefficients
        if self.return_coefficients:
            return gated, coefficients
        return gated

    def compute_output_shape(self, input_shape):
        skip_shape = tuple(input_shape[0])
        if self.return_coefficients:
            return skip_shape, (*skip_shape[:-1], 1)
        return skip_shape

    def count_flops(self, input_shape) -> int:
        """Multiply-adds x2 of the three 1x1 convolutions plus the element-wise steps."""
        skip_shape, gating_shape = input_shape
        pixels = int(skip_shape[1]) * int(skip_shape[2])
        c_skip, c_gate, k = int(skip_shape[-1]), int(gating_shape[-1]), self.inter_channels
        convs = 2 * pixels * (c_skip * k + c_gate * k + k)
        elementwise = pixels * (3 * k + 2 + c_skip)
        return convs + elementwise

    def get_config(self):
        config = super().get_config()
        config.update(
            inter_channels=self.inter_channels, return_coefficients=self.return_coefficients
        )
        return config
