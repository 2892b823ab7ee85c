"""Attention U-Net, exactly as the design draws it (7,869,572 parameters at base 64 filters).

Encoder 2x Conv(f)->pool for f = 64, 128, 256; bottleneck 2x Conv(512); each decoder level
UpSampling2D(2) -> Conv2D(f, 2) -> attention gate on the skip -> concatenate -> 2x Conv(f);
output Conv1x1 sigmoid. The model is fully convolutional, so weights trained at 128x128 load
into the 256x256 model unchanged (the low-resolution-first schedule relies on that).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from ml.layers import AttentionGate, ImageStandardize, LogitResidual
from ml.models.common import merged
from ml.models.spec import ModelSpec

DEFAULTS: dict[str, Any] = {
    "input_size": 256,
    "base_filters": 64,
    "depth": 3,
    "batchnorm": False,
    # With ~30 steps per epoch, Keras' default 0.99 leaves the moving statistics far behind the
    # weights early on, and validation swings; 0.9 tracks them within a few steps.
    "bn_momentum": 0.9,
    "dropout": 0.0,
    "internal_scale": 1,
    # Full-resolution refinement behind internal_scale > 1 (0 = none): ``refine_layers`` 3x3
    # convolutions of ``refine_filters`` over the input image and the upsampled probabilities
    # predict a correction of the probabilities' logit (zero at the start, see LogitResidual).
    "refine_filters": 0,
    "refine_layers": 2,
    # Also give the refinement the decoder's last feature maps, upsampled to the input size.
    "refine_features": False,
    # "standardize": each image to zero mean and unit variance before the network and the
    # refinement see it (ImageStandardize); "none": the [0, 1] image as it comes.
    "input_norm": "none",
}


def _conv_block(x, filters: int, name: str, batchnorm: bool, momentum: float = 0.9):
    for i in (1, 2):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batchnorm,
            activation=None if batchnorm else "relu",
            kernel_initializer="he_normal" if batchnorm else "glorot_uniform",
            name=f"{name}_conv{i}",
        )(x)
        if batchnorm:
            x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn{i}")(x)
            x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_attention_unet(cfg: dict[str, Any] | None = None, name: str = "attention_unet"):
    """Build the Attention U-Net.

    Args:
        cfg: optional overrides of ``DEFAULTS`` (``input_size``, ``base_filters``, ``depth``,
            ``batchnorm``, ``dropout`` before the bottleneck convs, ``internal_scale``: run the
            network at ``input_size / internal_scale`` behind a 2x2 average pooling (an exact area
            downsampling) and upsample the probabilities bilinearly back to the input size),
            ``refine_filters`` / ``refine_layers``: a full-resolution refinement after that
            upsampling, ``input_norm`` (see ``DEFAULTS``).
        name: model name.

    Returns:
        A ``keras.Model`` mapping ``image`` (S, S, 1) to ``mask`` (S, S, 1) sigmoid probabilities.
    """
    c = merged(DEFAULTS, cfg)
    size, base, depth, bn = (
        int(c["input_size"]),
        int(c["base_filters"]),
        int(c["depth"]),
        bool(c["batchnorm"]),
    )
    mom = float(c["bn_momentum"])
    if size % (2**depth):
        raise ValueError(f"input_size {size} must be divisible by 2**depth = {2**depth}")
    scale = int(c.get("internal_scale", 1))
    if size % (scale * 2**depth):
        raise ValueError(f"input_size {size} must be divisible by internal_scale * 2**depth")
    inputs = keras.Input((size, size, 1), name="image")
    norm = str(c["input_norm"])
    if norm not in ("none", "standardize"):
        raise ValueError(f"input_norm must be 'none' or 'standardize', not {norm!r}")
    image = ImageStandardize(name="standardize")(inputs) if norm == "standardize" else inputs
    x = image
    if scale > 1:
        # Weightless, so the same weights serve a model trained at input_size / scale.
        x = layers.AveragePooling2D(scale, name="downscale")(x)
    skips = []
    for level in range(depth):
        x = _conv_block(x, base * 2**level, f"enc{level + 1}", bn, mom)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level + 1}_pool")(x)
    if c["dropout"]:
        x = layers.Dropout(float(c["dropout"]), name="bottleneck_dropout")(x)
    x = _conv_block(x, base * 2**depth, "bottleneck", bn, mom)
    for level in reversed(range(depth)):
        f = base * 2**level
        tag = f"dec{level + 1}"
        x = layers.UpSampling2D(2, name=f"{tag}_up")(x)
        x = layers.Conv2D(f, 2, padding="same", activation="relu", name=f"{tag}_upconv")(x)
        gated, _ = AttentionGate(f, return_coefficients=True, name=f"{tag}_attention")(
            [skips[level], x]
        )
        x = layers.Concatenate(name=f"{tag}_concat")([gated, x])
        x = _conv_block(x, f, tag, bn, mom)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    if scale > 1:
        outputs = layers.UpSampling2D(scale, interpolation="bilinear", name="upscale")(outputs)
        if int(c["refine_filters"]) > 0:
            features = None
            if c["refine_features"]:
                features = layers.UpSampling2D(
                    scale, interpolation="bilinear", name="refine_features_up"
                )(x)
            outputs = _refined(
                image, outputs, int(c["refine_filters"]), int(c["refine_layers"]), features
            )
    elif int(c["refine_filters"]) > 0:
        raise ValueError("refine_filters needs internal_scale > 1 (nothing to refine at full size)")
    return keras.Model(inputs, outputs, name=name)


def _refined(image, prob, filters: int, n_layers: int, features=None):
    """The upsampled probabilities corrected from full-resolution detail of the image (and,
    given, the decoder's upsampled feature maps)."""
    h = layers.Concatenate(name="refine_concat")(
        [image, prob] if features is None else [image, prob, features]
    )
    for i in range(n_layers):
        h = layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_initializer="he_normal",
            name=f"refine_conv{i + 1}",
        )(h)
    delta = layers.Conv2D(1, 1, kernel_initializer="zeros", name="refine_delta")(h)
    return LogitResidual(name="refined")([prob, delta])


SPEC = ModelSpec(
    name="attention_unet",
    task="segmentation",
    build=build_attention_unet,
    defaults=DEFAULTS,
    tiny={"input_size": 64, "base_filters": 4},
)
