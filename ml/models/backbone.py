"""Backbones of the hybrid classifiers: EfficientNetB0 (keras.applications) or a tiny test stack.

The backbone is built *flat* into the classifier (``input_tensor=``), so its layers, notably
``top_activation`` for Grad-CAM, are reachable by name on the classifier itself, the FLOP counter
sees every convolution, and training can give backbone variables their own learning rate.

ImageNet weights cannot be downloaded here: ``backbone_weights`` may name a local Keras
``efficientnetb0_notop`` weights file; otherwise the backbone starts from random init
(``weights=None``). The manifest records which (see :func:`backbone_init`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

logger = logging.getLogger(__name__)

FEATURE_LAYER = "top_activation"
SCALE_LAYER = "to_backbone_range"
# keras.applications' EfficientNet divides by these once more when it loads ImageNet weights
# itself; a local file goes through load_weights instead, so the same factor is folded into the
# Normalization variance (see _fold_imagenet_stddev).
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

BACKBONE_DEFAULTS: dict[str, Any] = {
    "backbone": "efficientnetb0",
    "backbone_weights": None,
    "backbone_trainable": True,
    # EfficientNet expects 0..255 input and rescales it by 1/255 itself; our images are 0..1.
    "input_scale": 255.0,
    "tiny_filters": [8, 16, 32],
    # keras.applications uses 0.99; with ~30 steps per epoch on this data the moving statistics
    # of a trained backbone would lag far behind its weights, so validation would swing.
    "backbone_bn_momentum": 0.9,
}


def backbone_init(cfg: dict[str, Any]) -> dict[str, Any]:
    """Describe how a backbone was initialised, for the manifest's ``weights`` block."""
    path = cfg.get("backbone_weights")
    if cfg.get("backbone", "efficientnetb0") != "efficientnetb0":
        return {"imagenet": False, "init": "none", "backbone": cfg.get("backbone")}
    if path:
        return {"imagenet": True, "init": "local file", "file": Path(str(path)).name}
    return {"imagenet": False, "init": "none", "backbone": "efficientnetb0"}


def _tiny_backbone(x, filters: list[int]):
    """Five stride-2 stages ending in ``top_conv``, ``top_bn``, ``top_activation``."""
    widths = list(filters) + [filters[-1]] * (5 - len(filters))
    for i, f in enumerate(widths[:4], start=1):
        x = layers.Conv2D(
            int(f), 3, strides=2, padding="same", use_bias=False, name=f"tiny_conv{i}"
        )(x)
        x = layers.BatchNormalization(name=f"tiny_bn{i}")(x)
        x = layers.Activation("swish", name=f"tiny_act{i}")(x)
    x = layers.Conv2D(
        int(widths[4]), 3, strides=2, padding="same", use_bias=False, name="top_conv"
    )(x)
    x = layers.BatchNormalization(name="top_bn")(x)
    return layers.Activation("swish", name=FEATURE_LAYER)(x)


def _fold_imagenet_stddev(layer) -> None:
    mean, variance, count = layer.get_weights()
    stddev = np.asarray(IMAGENET_STDDEV_RGB, dtype=variance.dtype).reshape(variance.shape)
    layer.set_weights([mean, variance * stddev, count])


def _load_local_weights(model_layers: list, size: int, path: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(path)
    reference = keras.applications.EfficientNetB0(
        include_top=False, weights=path, input_shape=(size, size, 3)
    )
    src = [layer for layer in reference.layers if layer.weights]
    dst = [layer for layer in model_layers if layer.weights]
    if len(src) != len(dst):
        raise ValueError(f"backbone weights file {path} does not match EfficientNetB0")
    for s, d in zip(src, dst, strict=True):
        d.set_weights(s.get_weights())
        if isinstance(d, layers.Normalization):
            _fold_imagenet_stddev(d)
    logger.info("backbone initialised from local weights file %s", path)


def build_backbone(gray, cfg: dict[str, Any]):
    """Attach the adapter and backbone to a (S, S, 1) tensor.

    Args:
        gray: the model's image tensor.
        cfg: builder config holding the ``BACKBONE_DEFAULTS`` keys and ``input_size``.

    Returns:
        The backbone's last feature map (``top_activation``), (S/32, S/32, C).
    """
    x = layers.Conv2D(3, 1, name="gray_adapter")(gray)
    if cfg["backbone"] == "tiny":
        x = layers.Identity(name=SCALE_LAYER)(x)
        features = _tiny_backbone(x, cfg["tiny_filters"])
    elif cfg["backbone"] == "efficientnetb0":
        x = layers.Rescaling(float(cfg["input_scale"]), name=SCALE_LAYER)(x)
        net = keras.applications.EfficientNetB0(include_top=False, weights=None, input_tensor=x)
        features = net.output
        # keras.applications leaves its Rescaling/Normalization layers auto-named; name them so
        # every layer of the classifier has a stable name.
        for layer in net.layers:
            if layer.name.startswith("rescaling"):
                layer.name = "backbone_rescaling"
            elif layer.name.startswith("normalization"):
                layer.name = "backbone_normalization"
        if cfg.get("backbone_weights"):
            own = keras.Model(gray, features)
            start = [layer.name for layer in own.layers].index(SCALE_LAYER) + 1
            _load_local_weights(
                own.layers[start:], int(cfg["input_size"]), str(cfg["backbone_weights"])
            )
    else:
        raise ValueError(f"unknown backbone {cfg['backbone']!r} (efficientnetb0 or tiny)")
    own = keras.Model(gray, features)
    for layer in own.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = float(cfg["backbone_bn_momentum"])
    return features


def backbone_layers(model) -> list:
    """The layers of a hybrid's backbone (between the range scaling and ``top_activation``)."""
    names = [layer.name for layer in model.layers]
    start, stop = names.index(SCALE_LAYER) + 1, names.index(FEATURE_LAYER) + 1
    return model.layers[start:stop]


def set_backbone_trainable(model, trainable: bool) -> None:
    """Freeze or unfreeze the backbone (frozen BatchNorm runs in inference mode)."""
    for layer in backbone_layers(model):
        layer.trainable = trainable
