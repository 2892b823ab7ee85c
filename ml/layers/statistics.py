"""Global intensity and edge statistics of an image, as a weightless, serializable layer."""

from __future__ import annotations

import keras
from keras import layers, ops

EDGE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3)


@keras.saving.register_keras_serializable(package="spondyscan")
class ImageStatistics(layers.Layer):
    """(N, H, W, 1) in [0, 1] -> (N, 5 + len(thresholds)) global statistics.

    Mean, lower-half mean, standard deviation, mean gradient magnitude (forward differences),
    its standard deviation, and the fraction of pixels whose gradient magnitude exceeds each
    threshold (an edge-density proxy). These are the quantities feature-rule labels are computed
    from; a network given them learns such a rule far more easily than from pixels alone.
    """

    def __init__(self, thresholds: tuple[float, ...] = EDGE_THRESHOLDS, **kwargs):
        super().__init__(**kwargs)
        self.thresholds = tuple(float(t) for t in thresholds)

    def call(self, inputs):
        x = ops.cast(inputs[..., 0], "float32")
        height = x.shape[1]
        mean = ops.mean(x, axis=(1, 2))
        lower = ops.mean(x[:, height // 2 :, :], axis=(1, 2))
        std = ops.std(x, axis=(1, 2))
        gx = x[:, :-1, 1:] - x[:, :-1, :-1]
        gy = x[:, 1:, :-1] - x[:, :-1, :-1]
        mag = ops.sqrt(gx * gx + gy * gy + 1e-12)
        feats = [mean, lower, std, ops.mean(mag, axis=(1, 2)), ops.std(mag, axis=(1, 2))]
        feats += [ops.mean(ops.cast(mag > t, "float32"), axis=(1, 2)) for t in self.thresholds]
        return ops.stack(feats, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 5 + len(self.thresholds))

    def count_flops(self, input_shapes) -> int:
        """About a dozen element-wise operations per pixel."""
        shape = input_shapes[0] if isinstance(input_shapes, list) else input_shapes
        return 12 * int(shape[1]) * int(shape[2])

    def get_config(self):
        return {**super().get_config(), "thresholds": list(self.thresholds)}
