"""Ordinal (cumulative-link) heads: one severity score, ordered cut points, both outputs.

AS status and stage are ordered levels of one severity: negative < positive, and
Normal < Early < Moderate < Advanced, with a negative slice always Normal. A cumulative-link
model (McCullagh 1980; CORAL-style for networks) predicts one score ``s`` and learns ordered cut
points ``c0 < c1 < c2 < c3``:

- ``P(AS positive) = sigmoid(s - c0)``;
- ``P(stage >= k) = sigmoid(s - c_k)`` for k = 1..3, so
  ``P(Normal) = 1 - sigmoid(s - c1)``, ``P(Early) = sigmoid(s - c1) - sigmoid(s - c2)``, ...

The layer returns *logits* whose softmax are exactly those probabilities (``[0, s - c0]`` for
the status, the log-probabilities for the stage), so the model's outputs are ordinary softmax
layers and Grad-CAM can differentiate log-odds.
"""

from __future__ import annotations

import keras
from keras import layers, ops

EPS = 1e-7


@keras.saving.register_keras_serializable(package="spondyscan")
class OrdinalHeads(layers.Layer):
    """(N, 1) score -> [(N, 2) status logits, (N, 4) stage logits] with learnt ordered cuts."""

    def build(self, input_shape):
        self.first_cut = self.add_weight(
            shape=(), initializer="zeros", trainable=True, name="first_cut"
        )
        # Gaps between consecutive cut points, through softplus so the order always holds.
        self.raw_gaps = self.add_weight(
            shape=(3,), initializer=keras.initializers.Constant(0.5), trainable=True,
            name="raw_gaps",
        )  # fmt: skip
        super().build(input_shape)

    def cuts(self):
        """The four cut points ``[c0, c1, c2, c3]`` (increasing)."""
        gaps = ops.softplus(self.raw_gaps)
        return ops.concatenate(
            [ops.reshape(self.first_cut, (1,)), self.first_cut + ops.cumsum(gaps)], axis=0
        )

    def call(self, score):
        s = ops.cast(score, "float32")[:, :1]
        c = self.cuts()
        z = s - c[None, :]  # (N, 4)
        status_logits = ops.concatenate([ops.zeros_like(s), z[:, :1]], axis=-1)
        at_least = ops.sigmoid(z[:, 1:])  # P(stage >= 1..3), decreasing in k
        ones = ops.ones_like(s)
        zeros = ops.zeros_like(s)
        upper = ops.concatenate([ones, at_least], axis=-1)
        lower = ops.concatenate([at_least, zeros], axis=-1)
        stage_logits = ops.log(ops.maximum(upper - lower, EPS))
        return [status_logits, stage_logits]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], 2), (input_shape[0], 4)]
