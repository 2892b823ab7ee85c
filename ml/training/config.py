"""Training configs: one YAML per trainable model (``ml/configs/<key>.yaml``).

A config names the registry ``key``, the ``architecture`` and its builder config (``model``),
and the fit hyperparameters. Unknown keys are refused so a typo does not silently fall back to
a default. Layout (defaults in :data:`DEFAULTS`)::

    key: cnn_classifier            # bundle folder models/<key>
    display_name: CNN Classifier
    architecture: simple_cnn
    model: {}                      # builder overrides (see ml.models.<arch>.DEFAULTS)
    seed: 42
    data:
      val_fraction: 0.15           # subjects of the train split held out for validation
      augment: null                # or {shift, rotate, scale, brightness, contrast, gamma, p}
      oversample: null             # or {ratio: 1.0}: classifiers, by stage
    training:
      epochs: 50
      batch_size: 16
      optimizer: {name: adam, learning_rate: 1.0e-3, backbone_learning_rate: null}
      loss: bce                    # segmentation; classifiers: one per head (binary/stage_output)
      loss_weights: null           # classifiers: {binary_output: 1.0, stage_output: 0.5}
      early_stopping: {monitor: val_loss, patience: 10, restore_best_weights: false}
      reduce_lr: {monitor: val_loss, factor: 0.5, patience: 5, min_lr: 1.0e-7}
      checkpoint: {monitor: val_loss, bundle: null}   # bundle: also write the best epoch as <key>
      schedule: null               # U-Nets: [{input_size: 128, epochs: 30}, {input_size: 256, ...}]
      final_weights: last          # last | best (the checkpoint's best epoch)
      run_eagerly: false           # true skips graph tracing: faster for tiny test models only
      init_from: null              # a bundle (key under the models folder, or a folder) whose
                                   # layers of the same name and shape start this model
    bundle:
      version: 1.0.0
      default: false
      storage: auto                # auto: float16 when the test metrics stay within tolerance
      float16_tolerance: 0.005
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

DEFAULTS: dict[str, Any] = {
    "key": None,
    "display_name": None,
    "description": "",
    "architecture": None,
    "model": {},
    "seed": 42,
    "data": {"val_fraction": 0.15, "augment": None, "oversample": None},
    "training": {
        "epochs": 50,
        "batch_size": 16,
        "optimizer": {"name": "adam", "learning_rate": 1e-3, "backbone_learning_rate": None},
        "loss": None,
        "loss_weights": None,
        "early_stopping": {"monitor": "val_loss", "patience": 10, "restore_best_weights": False},
        "reduce_lr": {"monitor": "val_loss", "factor": 0.5, "patience": 5, "min_lr": 1e-7},
        "checkpoint": {"monitor": None, "bundle": None},
        "schedule": None,
        "final_weights": "last",
        "run_eagerly": False,
        "init_from": None,
    },
    "bundle": {
        "version": "1.0.0",
        "default": False,
        "storage": "auto",
        "float16_tolerance": 0.005,
        "derived": [],
    },
}
# Sections whose values are free-form (passed on to builders / losses / augmentation).
OPEN_SECTIONS = {"model", "augment", "oversample", "loss", "loss_weights", "schedule",
                 "backbone_learning_rate", "derived"}  # fmt: skip


class ConfigError(ValueError):
    """A training config is malformed."""


def _merge(defaults: dict[str, Any], given: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(defaults)
    for key, value in (given or {}).items():
        if key not in defaults:
            raise ConfigError(f"{where}: unknown key {key!r} (allowed: {sorted(defaults)})")
        if isinstance(defaults[key], dict) and key not in OPEN_SECTIONS:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a mapping")
            out[key] = _merge(defaults[key], value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def normalize_config(raw: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Fill defaults and check a config dict; returns a new dict."""
    from ml.models import ARCHITECTURES, spec

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config is a YAML mapping")
    cfg = _merge(DEFAULTS, raw, source)
    if not cfg["key"] or not isinstance(cfg["key"], str):
        raise ConfigError(f"{source}: 'key' (the bundle name) is required")
    if cfg["architecture"] not in ARCHITECTURES:
        raise ConfigError(
            f"{source}: architecture must be one of {', '.join(ARCHITECTURES)}, "
            f"got {cfg['architecture']!r}"
        )
    cfg["display_name"] = cfg["display_name"] or cfg["key"]
    task = spec(cfg["architecture"]).task
    t = cfg["training"]
    if t["loss"] is None:
        t["loss"] = (
            "bce"
            if task == "segmentation"
            else {"binary_output": "sparse_ce", "stage_output": "sparse_ce"}
        )
    if task == "classification" and t["loss_weights"] is None:
        t["loss_weights"] = {"binary_output": 1.0, "stage_output": 0.5}
    if task == "classification" and not isinstance(t["loss"], dict):
        raise ConfigError(f"{source}: classifiers need a loss per head (binary/stage_output)")
    if t["final_weights"] not in ("last", "best"):
        raise ConfigError(f"{source}: training.final_weights must be last or best")
    if t["schedule"] is not None:
        if not isinstance(t["schedule"], list) or not t["schedule"]:
            raise ConfigError(f"{source}: training.schedule must be a non-empty list of stages")
        for i, stage in enumerate(t["schedule"]):
            extra = set(stage) - {"input_size", "epochs", "learning_rate", "batch_size"}
            if extra or "epochs" not in stage:
                raise ConfigError(
                    f"{source}: schedule[{i}] needs epochs and may set input_size, "
                    f"learning_rate, batch_size (got {sorted(stage)})"
                )
    init_from = t["init_from"]
    if init_from is not None and (not isinstance(init_from, str) or not init_from.strip()):
        raise ConfigError(f"{source}: training.init_from must be a bundle key or folder")
    if cfg["bundle"]["storage"] not in ("auto", "float16", "float32"):
        raise ConfigError(f"{source}: bundle.storage must be auto, float16 or float32")
    if not 0.0 <= float(cfg["data"]["val_fraction"]) < 1.0:
        raise ConfigError(f"{source}: data.val_fraction must be in [0, 1)")
    return cfg


def load_config(path: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Read and normalise a YAML training config; ``path`` may also be a bare key, or a config
    dict (normalised again, keeping its ``_path``)."""
    if isinstance(path, dict):
        cfg = normalize_config({k: v for k, v in path.items() if k != "_path"})
        cfg["_path"] = path.get("_path", "")
        return cfg
    p = Path(path)
    if not p.exists() and not p.suffix and (CONFIG_DIR / f"{path}.yaml").is_file():
        p = CONFIG_DIR / f"{path}.yaml"
    if not p.is_file():
        raise FileNotFoundError(2, "no such config", str(path))
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML ({exc})") from exc
    cfg = normalize_config(raw, str(p))
    cfg["_path"] = str(p)
    return cfg


def stages(
    cfg: dict[str, Any], epochs_override: int | Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """The fit stages: ``schedule`` entries, or one stage at the model's input size.

    ``epochs_override`` caps every stage at that many epochs (quick runs, tests), or, as a
    sequence with one number per stage, each stage at its own cap (a CPU-sized schedule).
    """
    t = cfg["training"]
    full = int(cfg["model"].get("input_size", 256))
    raw = t["schedule"] or [{"epochs": t["epochs"]}]
    if epochs_override is None or isinstance(epochs_override, int):
        caps: list[int | None] = [epochs_override] * len(raw)
    else:
        caps = [int(n) for n in epochs_override]
        if len(caps) != len(raw):
            raise ConfigError(
                f"{len(caps)} epoch caps given for {len(raw)} schedule stages; give one per stage"
            )
    if any(c is not None and c < 1 for c in caps):
        raise ConfigError("epoch caps must be at least 1")
    out = []
    for stage, cap in zip(raw, caps, strict=True):
        epochs = int(stage["epochs"])
        if cap is not None:
            epochs = min(epochs, int(cap))
        out.append(
            {
                "input_size": int(stage.get("input_size", full)),
                "epochs": epochs,
                "learning_rate": float(stage.get("learning_rate", t["optimizer"]["learning_rate"])),
                "batch_size": int(stage.get("batch_size", t["batch_size"])),
            }
        )
    if out[-1]["input_size"] != full:
        raise ConfigError("the last schedule stage must train at the model's input_size")
    return out
