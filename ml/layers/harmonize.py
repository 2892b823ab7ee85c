"""Site harmonisation: recognise the scanner/sequence a slice came from and rank its measurements
among that source's training slices (backend-neutral Keras ops).

Multi-site MRI statistics differ by scanner and sequence far more than by anatomy, so a grey-level
feature means little until it is compared with slices of the same source. Three layers do this:

- :class:`ScannerFingerprint` (weightless): numbers that tell sources apart (background share,
  fine texture, the brightest tail, the borders);
- :class:`SourceRecognizer`: a standardised multinomial logistic regression from a fingerprint
  to source probabilities, fitted by :meth:`SourceRecognizer.adapt` on the training images and
  their source names (no labels), then frozen;
- :class:`SiteRanks`: each measurement's mid-rank percentile among the training slices of each
  source (stored by :meth:`SiteRanks.adapt`), mixed by the recognised source probabilities.

Both adapted layers keep a fixed capacity (``max_sources`` slots of ``max_refs`` values) so a
model builds before it has seen data; unused slots are masked out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops

from ml.layers.host_ops import row_quantiles, supports_jit

logger = logging.getLogger(__name__)

UNUSED_LOGIT = -1.0e4  # an unused source slot's bias: softmax gives it no weight


def _source_names(sources: Sequence[str], slots: int) -> list[str]:
    """The sorted distinct source names: slot i belongs to names[i]."""
    names = sorted({str(s) for s in sources})
    if len(names) > slots:
        raise ValueError(f"{len(names)} sources exceed the layer's {slots} slots")
    return names


def _image(inputs):
    x = ops.cast(inputs, "float32")
    return x[..., 0] if len(x.shape) == 4 else x


@keras.saving.register_keras_serializable(package="spondyscan")
class ScannerFingerprint(layers.Layer):
    """(N, H, W, 1) in [0, 1] -> (N, 8): share of zero pixels, mean absolute 4-neighbour
    Laplacian, the 99th and 99.9th percentiles, and the mean of the 8-pixel top, bottom, left and
    right borders (padding, field of view and sequence differ between sources)."""

    def __init__(self, border: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.border = int(border)
        self.supports_jit = supports_jit()

    def call(self, inputs):
        x = _image(inputs)
        b = self.border
        flat = ops.reshape(x, (-1, x.shape[1] * x.shape[2]))
        zero = ops.mean(ops.cast(flat <= 0.0, "float32"), axis=1)
        centre = x[:, 1:-1, 1:-1]
        lap = x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:] - 4.0 * centre
        texture = ops.mean(ops.abs(lap), axis=(1, 2))
        tail = row_quantiles(flat, ops.convert_to_tensor([0.99, 0.999]))
        borders = [
            ops.mean(x[:, :b, :], axis=(1, 2)),
            ops.mean(x[:, -b:, :], axis=(1, 2)),
            ops.mean(x[:, :, :b], axis=(1, 2)),
            ops.mean(x[:, :, -b:], axis=(1, 2)),
        ]
        singles = ops.stack([zero, texture, *borders], axis=1)
        return ops.concatenate([singles[:, :2], tail, singles[:, 2:]], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 8)

    def count_flops(self, input_shapes) -> int:
        shape = input_shapes[0] if isinstance(input_shapes, list) else input_shapes
        return 12 * int(shape[1]) * int(shape[2])

    def get_config(self):
        return {**super().get_config(), "border": self.border}


@keras.saving.register_keras_serializable(package="spondyscan")
class SourceRecognizer(layers.Layer):
    """(N, F) fingerprint -> (N, max_sources) source probabilities (frozen logistic regression).

    ``adapt(values, sources)`` standardises the fingerprints and fits an L2-regularised
    multinomial logistic regression (scikit-learn) to the source names; the source order is the
    sorted names, also returned. Before adapt it gives every slot the same weight.
    """

    adapts_to_sources = True

    def __init__(self, max_sources: int = 8, regularization: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.max_sources = int(max_sources)
        self.regularization = float(regularization)

    def build(self, input_shape):
        f = int(input_shape[-1])
        s = self.max_sources
        self.mean = self.add_weight(shape=(f,), initializer="zeros", trainable=False, name="mean")
        self.scale = self.add_weight(shape=(f,), initializer="ones", trainable=False, name="scale")
        self.kernel = self.add_weight(
            shape=(f, s), initializer="zeros", trainable=False, name="kernel"
        )
        self.bias = self.add_weight(shape=(s,), initializer="zeros", trainable=False, name="bias")

    def call(self, inputs):
        z = (ops.cast(inputs, "float32") - self.mean) / self.scale
        return ops.softmax(ops.matmul(z, self.kernel) + self.bias, axis=-1)

    def adapt(self, values, sources: Sequence[str]) -> list[str]:
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(values, np.float64)
        names = _source_names(sources, self.max_sources)
        if not self.built:
            self.build(x.shape)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-8, scale, 1.0)
        kernel = np.zeros((x.shape[1], self.max_sources))
        bias = np.full(self.max_sources, UNUSED_LOGIT)
        if len(names) == 1:
            bias[0] = 0.0
        else:
            y = np.array([names.index(str(s)) for s in sources])
            clf = LogisticRegression(C=self.regularization, max_iter=10000)
            clf.fit((x - mean) / scale, y)
            coef, intercept = clf.coef_, clf.intercept_
            if len(names) == 2:  # binary: one logit for the second class
                coef = np.vstack([np.zeros_like(coef), coef])
                intercept = np.r_[0.0, intercept]
            kernel[:, : len(names)] = coef.T
            bias[: len(names)] = intercept
            accuracy = float(np.mean(clf.predict((x - mean) / scale) == y))
            logger.info("source recogniser: %d sources, %.3f training accuracy", len(names),
                        accuracy)  # fmt: skip
        self.mean.assign(mean.astype(np.float32))
        self.scale.assign(scale.astype(np.float32))
        self.kernel.assign(kernel.astype(np.float32))
        self.bias.assign(bias.astype(np.float32))
        return names

    def get_config(self):
        return {
            **super().get_config(),
            "max_sources": self.max_sources,
            "regularization": self.regularization,
        }


@keras.saving.register_keras_serializable(package="spondyscan")
class SiteRanks(layers.Layer):
    """[(N, F) measurements, (N, S) source probabilities] -> (N, F) mid-rank percentiles.

    For source slot ``s`` the rank of ``x`` is ``(#{ref < x} + #{ref <= x}) / (2 n_s)`` over
    that source's stored training values; the output is the probability-weighted mix over
    slots. ``adapt(values, sources)`` stores each source's values (evenly spaced order
    statistics when a source has more than ``max_refs`` slices); ``values`` is the measurements
    array, or the layer's inputs list, whose first entry is the measurements.
    """

    adapts_to_sources = True

    def __init__(self, max_sources: int = 8, max_refs: int = 512, **kwargs):
        super().__init__(**kwargs)
        self.max_sources = int(max_sources)
        self.max_refs = int(max_refs)

    def build(self, input_shape):
        f = int(input_shape[0][-1])
        s, k = self.max_sources, self.max_refs
        self.refs = self.add_weight(
            shape=(s, f, k), initializer="zeros", trainable=False, name="refs"
        )
        self.valid = self.add_weight(
            shape=(s, k), initializer="zeros", trainable=False, name="valid"
        )

    def call(self, inputs):
        x, probs = inputs
        x = ops.cast(x, "float32")[:, None, :, None]  # (N, 1, F, 1)
        refs = self.refs[None]  # (1, S, F, K)
        valid = self.valid[None, :, None, :]  # (1, S, 1, K)
        below = ops.sum(ops.cast(refs < x, "float32") * valid, axis=-1)
        at_or_below = ops.sum(ops.cast(refs <= x, "float32") * valid, axis=-1)
        count = ops.maximum(ops.sum(self.valid, axis=-1), 1.0)[None, :, None]  # (1, S, 1)
        ranks = (below + at_or_below) / (2.0 * count)  # (N, S, F)
        return ops.sum(ranks * ops.cast(probs, "float32")[:, :, None], axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def adapt(self, values, sources: Sequence[str]) -> list[str]:
        x = np.asarray(values[0] if isinstance(values, (list, tuple)) else values, np.float64)
        names = _source_names(sources, self.max_sources)
        if not self.built:
            self.build([x.shape, (None, self.max_sources)])
        src = np.array([str(s) for s in sources])
        refs = np.zeros((self.max_sources, x.shape[1], self.max_refs), np.float32)
        valid = np.zeros((self.max_sources, self.max_refs), np.float32)
        for i, name in enumerate(names):
            v = np.sort(x[src == name], axis=0)
            if len(v) > self.max_refs:
                logger.warning("%s: %d slices, keeping %d order statistics", name, len(v),
                               self.max_refs)  # fmt: skip
                v = v[np.linspace(0, len(v) - 1, self.max_refs).round().astype(int)]
            refs[i, :, : len(v)] = v.T
            valid[i, : len(v)] = 1.0
        self.refs.assign(refs)
        self.valid.assign(valid)
        return names

    def count_flops(self, input_shapes) -> int:
        f = int(input_shapes[0][-1])
        return 6 * self.max_sources * f * self.max_refs

    def get_config(self):
        return {**super().get_config(), "max_sources": self.max_sources, "max_refs": self.max_refs}
