"""Analytic FLOP count of a built Keras model, per image, forward pass.

Convention: a multiply-add is 2 FLOPs (convolutions, dense layers, attention products);
element-wise layers (activations, BatchNorm, add/multiply, pooling, resizing) count one FLOP per
output element (BatchNorm two, pooling one per window element). Layers that only move data
(reshape, concatenate, padding, dropout, input) are free. Custom layers may define
``count_flops(input_shape)``. The count reads shapes only, so it runs on any backend.
"""

from __future__ import annotations

import math

from keras import layers

FREE = (
    layers.InputLayer,
    layers.Reshape,
    layers.Flatten,
    layers.Concatenate,
    layers.Dropout,
    layers.ZeroPadding2D,
    layers.Identity,
)
ELEMENTWISE = (
    layers.Activation,
    layers.ReLU,
    layers.Rescaling,
    layers.Normalization,
    layers.Add,
    layers.Multiply,
    layers.LayerNormalization,
    layers.UpSampling2D,
)


def _shape(tensor) -> tuple:
    return tuple(tensor.shape)


def _elements(shape) -> int:
    return int(math.prod(int(d) for d in shape[1:]))


def _shapes(tensors):
    if isinstance(tensors, (list, tuple)):
        return [_shape(t) for t in tensors]
    return _shape(tensors)


def _activation_cost(layer, out_elems: int) -> int:
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", "linear")
    return 0 if name == "linear" else out_elems


def layer_flops(layer) -> int:
    """FLOPs of one layer's (first) call, per image."""
    if isinstance(layer, FREE):
        return 0
    if hasattr(layer, "count_flops"):
        return int(layer.count_flops(_shapes(layer.input)))
    out = layer.output
    if isinstance(out, (list, tuple)):
        out = out[0]
    out_shape = _shape(out)
    out_elems = _elements(out_shape)
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        macs = out_elems * kh * kw
        return 2 * macs + (out_elems if layer.use_bias else 0) + _activation_cost(layer, out_elems)
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        c_in = int(_shape(layer.input)[-1]) // int(getattr(layer, "groups", 1) or 1)
        macs = out_elems * kh * kw * c_in
        return 2 * macs + (out_elems if layer.use_bias else 0) + _activation_cost(layer, out_elems)
    if isinstance(layer, layers.Dense):
        c_in = int(_shape(layer.input)[-1])
        return (
            2 * out_elems * c_in
            + (out_elems if layer.use_bias else 0)
            + _activation_cost(layer, out_elems)
        )
    if isinstance(layer, layers.BatchNormalization):
        return 2 * out_elems
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        ph, pw = layer.pool_size
        return out_elems * ph * pw
    if isinstance(
        layer,
        (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D, layers.GlobalAveragePooling1D),
    ):
        return _elements(_shape(layer.input))
    if isinstance(layer, layers.MultiHeadAttention):
        q = (
            _shape(layer.input[0])
            if isinstance(layer.input, (list, tuple))
            else _shape(layer.input)
        )
        tokens, dim = int(q[1]), int(q[-1])
        inner = layer.num_heads * layer.key_dim
        return 2 * tokens * 4 * dim * inner + 4 * layer.num_heads * tokens * tokens * layer.key_dim
    if isinstance(layer, ELEMENTWISE):
        return out_elems
    # Unknown layers count as element-wise: close enough for the small glue layers left.
    return out_elems


def count_flops(model) -> int:
    """Total forward FLOPs per image of a built functional ``model`` (see module docstring)."""
    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers") and not hasattr(layer, "count_flops"):
            total += count_flops(layer)  # a nested functional model
        else:
            total += layer_flops(layer)
    return int(total)
