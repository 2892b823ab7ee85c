"""Optimizers with per-variable learning-rate multipliers (backend-neutral).

Keras 3 has no multi-optimizer; instead :class:`MultiplierAdam` scales the learning rate of
chosen variables inside ``update_step``, which every backend calls per variable. A hybrid with
backbone 1e-5 and head 1e-3 is Adam(1e-3) with multiplier 0.01 on the backbone's variables, and
ReduceLROnPlateau keeps the ratio as it lowers the base rate.
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="spondyscan")
class MultiplierAdam(keras.optimizers.Adam):
    """Adam whose learning rate is multiplied by ``lr_multipliers[variable.path]`` (default 1)."""

    def __init__(self, lr_multipliers: dict[str, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        self._multiplier_by_index: list[float] = []

    def build(self, var_list):
        super().build(var_list)
        self._multiplier_by_index = [self.lr_multipliers.get(v.path, 1.0) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier_by_index[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": self.lr_multipliers}


def backbone_learning_rate(spec: Any, pretrained: bool) -> float | None:
    """Resolve ``backbone_learning_rate``: a number, or ``{pretrained: x, random: y}``."""
    if spec is None or isinstance(spec, (int, float)):
        return None if spec is None else float(spec)
    key = "pretrained" if pretrained else "random"
    if key not in spec:
        raise ValueError(f"backbone_learning_rate needs a {key!r} entry")
    return float(spec[key])


def make_optimizer(model, spec: dict[str, Any], learning_rate: float, backbone_lr: float | None):
    """Adam, with the backbone's variables at ``backbone_lr`` when it is set (hybrids)."""
    if spec.get("name", "adam") != "adam":
        raise ValueError(f"unsupported optimizer {spec.get('name')!r} (adam)")
    multipliers: dict[str, float] = {}
    if backbone_lr is not None and backbone_lr != learning_rate:
        from ml.models.backbone import backbone_layers

        ratio = backbone_lr / learning_rate
        for layer in backbone_layers(model):
            for var in layer.trainable_variables:
                multipliers[var.path] = ratio
    if multipliers:
        return MultiplierAdam(lr_multipliers=multipliers, learning_rate=learning_rate)
    return keras.optimizers.Adam(learning_rate=learning_rate)


HEADS = {"binary_output": 2, "stage_output": 4}


def compile_for_task(model, cfg, task: str, train_data, fit_idx, learning_rate: float) -> None:
    """Compile with the config's optimizer, losses and metrics for a segmenter or a classifier."""
    from ml.losses import get_loss
    from ml.metrics import DiceScore, IoUScore
    from ml.models import spec

    t = cfg["training"]
    pretrained = bool(spec(cfg["architecture"]).weights_init(cfg["model"]).get("imagenet"))
    backbone_lr = backbone_learning_rate(t["optimizer"].get("backbone_learning_rate"), pretrained)
    if backbone_lr is not None:
        backbone_lr *= learning_rate / float(t["optimizer"]["learning_rate"])
    optimizer = make_optimizer(model, t["optimizer"], learning_rate, backbone_lr)
    eager = bool(t.get("run_eagerly", False))
    if task == "segmentation":
        model.compile(
            optimizer=optimizer,
            loss=get_loss(t["loss"]),
            metrics=[DiceScore(name="dice"), IoUScore(name="iou")],
            run_eagerly=eager,
        )
        return
    labels = {
        "binary_output": train_data.as_status[fit_idx],
        "stage_output": train_data.stage[fit_idx],
    }
    losses = {h: get_loss(t["loss"][h], labels[h], HEADS[h]) for h in HEADS}
    model.compile(
        optimizer=optimizer,
        loss=losses,
        loss_weights={h: float(t["loss_weights"][h]) for h in HEADS},
        metrics={h: ["accuracy"] for h in HEADS},
        run_eagerly=eager,
    )
