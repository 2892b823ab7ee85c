"""The fit loop: config + prepared dataset -> trained model -> evaluated bundle(s).

Seeds are fixed; the train split is divided into fit and validation subsets by subject; each
stage of the schedule (U-Nets: low resolution first, then full resolution) builds the model at
its size and inherits the previous stage's weights; Keras callbacks do early stopping, learning
rate reduction and best-epoch checkpoints; the test split is evaluated at the end and the bundle
is written with its manifest, model card, report, curves and log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ml.training.config import load_config, normalize_config, stages

logger = logging.getLogger(__name__)

HEADS = {"binary_output": 2, "stage_output": 4}


@dataclass
class TrainResult:
    """What a run produced."""

    key: str
    bundle_dir: Path
    manifest: dict[str, Any]
    seconds: float
    derived: list[Path] = field(default_factory=list)


def _file_record(path: str | Path) -> dict[str, Any]:
    import hashlib

    data = Path(path).read_bytes()
    return {"file": Path(path).name, "sha256": hashlib.sha256(data).hexdigest()}


def machine_info() -> dict[str, Any]:
    """Where a run happened (for the manifest)."""
    import keras

    versions = {}
    for pkg in ("keras", "tensorflow", "tensorflow-cpu", "jax"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    cpus = os.cpu_count() or 0
    from ml.runtime import accelerator_name

    accelerator = accelerator_name()
    on = f"{accelerator}, " if accelerator else ""
    return {
        "summary": f"{on}{platform.machine()} CPU x{cpus}, Keras {keras.__version__} "
        f"({keras.backend.backend()})",
        "platform": platform.platform(),
        "accelerator": accelerator,
        "cpu_count": cpus,
        "backend": keras.backend.backend(),
        "versions": versions,
    }


def _targets(task: str, data, idx: np.ndarray, size: int):
    from ml.training.data import resize_images, resize_masks

    x = resize_images(data.images[idx], size)
    if task == "segmentation":
        return x, resize_masks(data.masks[idx], size)
    return x, {"binary_output": data.as_status[idx], "stage_output": data.stage[idx]}


def _compile(model, cfg, task: str, train_data, fit_idx, learning_rate: float):
    from ml.losses import get_loss
    from ml.metrics import DiceScore, IoUScore
    from ml.models import weights_init
    from ml.training.optim import backbone_learning_rate, make_optimizer

    t = cfg["training"]
    pretrained = bool(weights_init(cfg["architecture"], cfg["model"]).get("imagenet"))
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


def carry_optimizer_state(old, new, variables) -> int:
    """Copy Adam's step count and moment estimates from the previous stage's optimizer ``old``
    into ``new`` (built here for ``variables``), leaving ``new``'s learning rate as configured.

    A fresh Adam's first steps are full-size (its bias-corrected moments start from one
    gradient), which knocked the design's un-normalised U-Net back to an all-background output
    at the 256 px stage; continuing the moments avoids that jolt. The stages share their weight
    shapes (fully convolutional), so the optimizer variables match one to one. Returns how many
    variables were copied (0 when there was nothing to carry).
    """
    if old is None or not getattr(old, "built", False):
        return 0
    new.build(variables)
    skip = {id(v) for v in (getattr(new, "_learning_rate", None),) if v is not None}
    pairs = [
        (a, b) for a, b in zip(new.variables, old.variables, strict=False) if id(a) not in skip
    ]
    if len(new.variables) != len(old.variables) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in pairs
    ):
        logger.warning("optimizer state not carried over: the stages' variables differ")
        return 0
    for a, b in pairs:
        a.assign(b)
    return len(pairs)


def fit_view(model, names: tuple[str, ...]):
    """The model trained on cached outputs of its weightless input layers ``names``.

    Returns the model itself when ``names`` is empty; otherwise a functional model sharing all
    its layers whose inputs are the image and those layers' outputs.
    """
    import keras

    if not names:
        return model
    outputs = [model.get_layer(n).output for n in names]
    return keras.Model([model.inputs[0], *outputs], model.outputs, name=f"{model.name}_fit")


def precompute(model, names: tuple[str, ...], images: np.ndarray) -> list[np.ndarray]:
    """Outputs of the weightless layers ``names`` for ``images`` (cached training inputs)."""
    import keras

    if not names:
        return []
    feature_model = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    out = feature_model.predict(images, batch_size=32, verbose=0)
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


def adapt_layers(
    model,
    names: tuple[str, ...],
    images: np.ndarray,
    cached: tuple[str, ...],
    extras,
    sourced: tuple[np.ndarray, list[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Adapt the layers ``names`` in order before fitting; returns what each was adapted on.

    A keras ``Normalization`` layer takes the mean and variance of its inputs on the fit
    ``images`` (from the cached measurements ``extras`` when they suffice). A layer with
    ``adapts_to_sources`` (site harmonisation) takes ``sourced`` = (images, their cached
    measurements, their source names): the whole training split, whose images and scanner
    names (never its labels) may shape the preprocessing.
    """
    import keras

    record: dict[str, Any] = {}
    for name in names:
        layer = model.get_layer(name)
        per_source = bool(getattr(layer, "adapts_to_sources", False))
        if per_source and sourced is None:
            raise ValueError(f"{name} adapts to source names, and none were given")
        layer_images, layer_extras = (images, extras)
        if per_source and sourced is not None:
            layer_images, layer_extras = sourced[0], sourced[1]
        if cached:
            sources = [model.get_layer(n).output for n in cached]
            inputs, batch = layer_extras, 256
        else:
            sources, inputs, batch = model.inputs, layer_images, 32
        wanted = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        outputs = []
        for tensor in wanted:
            known = [i for i, t in enumerate(sources) if t is tensor]
            if known:  # a cached measurement itself
                outputs.append(np.asarray(inputs[known[0]]))
                continue
            outputs.append(np.asarray(
                keras.Model(sources, tensor).predict(inputs, batch_size=batch, verbose=0)
            ))  # fmt: skip
        values = outputs if isinstance(layer.input, (list, tuple)) else outputs[0]
        if per_source:
            assert sourced is not None
            names_seen = layer.adapt(values, sourced[2])
            record[name] = {"images": int(len(sourced[2])), "sources": names_seen}
        else:
            layer.adapt(np.asarray(values))
            record[name] = {"images": int(len(layer_images))}
        logger.info("adapted %s to %s", name, record[name])
    return record


def _monitor(name: str, has_val: bool) -> str:
    return name if has_val or not name.startswith("val_") else name[len("val_") :]


def _mode(monitor: str) -> str:
    return "min" if "loss" in monitor else "max"


def _callbacks(cfg, stage_index, size, run_dir: Path, rows, has_val: bool):
    import keras

    from ml.training.callbacks import EpochRecorder

    t = cfg["training"]
    es = t["early_stopping"]
    rl = t["reduce_lr"]
    ck_monitor = _monitor(t["checkpoint"].get("monitor") or es["monitor"], has_val)
    checkpoint = run_dir / f"best_stage{stage_index}.weights.h5"
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(
            str(checkpoint),
            monitor=ck_monitor,
            mode=_mode(ck_monitor),
            save_best_only=True,
            save_weights_only=True,
            verbose=0,
        ),
        EpochRecorder(run_dir / "training_log.csv", rows, stage_index, size),
    ]
    if es:
        monitor = _monitor(es["monitor"], has_val)
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                mode=_mode(monitor),
                patience=int(es["patience"]),
                restore_best_weights=bool(es.get("restore_best_weights", False)),
                verbose=1,
            )
        )
    if rl:
        monitor = _monitor(rl["monitor"], has_val)
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                mode=_mode(monitor),
                factor=float(rl["factor"]),
                patience=int(rl["patience"]),
                min_lr=float(rl.get("min_lr", 1e-7)),
                verbose=1,
            )
        )
    return callbacks, checkpoint


def _provenance(train_data, dataset_dir: Path, task: str) -> dict[str, Any]:
    from ml.bundle import label_provenance

    rule_version = None
    rule_path = dataset_dir / "label_rule.json"
    if train_data.label_source.startswith("feature_rule") and rule_path.is_file():
        try:
            rule_version = json.loads(rule_path.read_text()).get("version")
        except ValueError:
            rule_version = None
    mask_kind = None
    if task == "segmentation":
        kinds = {r.get("mask_kind", "") for r in train_data.rows} - {""}
        mask_kind = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None)
    return label_provenance(train_data.label_source, rule_version, mask_kind)


def _evaluate_for_bundle(model, task, test_data, storage: str, tolerance: float):
    """Test metrics, choosing float16 storage when rounding keeps them within ``tolerance``."""
    from ml.bundle import round_weights
    from ml.evaluation.evaluate import evaluate_model
    from ml.evaluation.metrics import max_headline_change
    from ml.runtime import full_float32

    with full_float32():  # GPU metrics that the CPU reproduces when it reloads the bundle
        metrics32, artifacts32 = evaluate_model(model, task, test_data)
    if storage == "float32":
        return metrics32, artifacts32, "float32", None
    original = round_weights(model, "float16")
    with full_float32():
        metrics16, artifacts16 = evaluate_model(model, task, test_data)
    change = max_headline_change(metrics32, metrics16, task)
    if storage == "float16" or change <= tolerance:
        return metrics16, artifacts16, "float16", change
    logger.info("float16 storage changes the metrics by %.4f: keeping float32", change)
    model.set_weights(original)
    return metrics32, artifacts32, "float32", change


def train(
    config: str | Path | dict[str, Any],
    dataset_dir: str | Path,
    out_dir: str | Path | None = None,
    epochs: int | list[int] | None = None,
    models_dir: str | Path = "models",
    run_dir: str | Path | None = None,
    verbose: int | None = None,
    init_weights: str | Path | None = None,
    time_limit: float | None = None,
) -> TrainResult:
    """Train one config on a prepared dataset and write its bundle (and derived bundles).

    Args:
        config: YAML path, config key, or a config dict.
        dataset_dir: a folder written by ``spondyscan prepare``.
        out_dir: bundle folder (default ``models_dir/<key>``).
        epochs: cap on the epochs of every stage (quick runs and tests), or a list with one
            cap per schedule stage.
        models_dir: where derived bundles (e.g. ``unet_best``) go, next to the main one.
        run_dir: checkpoints and logs of the run (default ``runs/<key>``).
        verbose: Keras fit verbosity (default: progress bar on a terminal, a line per epoch
            otherwise).
        init_weights: a ``.weights.h5`` of the same architecture to start from (continuing an
            earlier run); its name and sha256 go into the manifest.
        time_limit: seconds of training (from the start of the call) after which the epoch
            in progress is the last one and later stages are skipped; the test evaluation and
            the bundle follow as usual, and the manifest records the limit and whether it hit.
    """
    import keras

    from ml.bundle import new_manifest, read_manifest, write_bundle
    from ml.data.dataset import load_split
    from ml.evaluation.evaluate import curves_artifact, metrics_block
    from ml.models import (
        adapted_layers,
        build_model,
        count_flops,
        precomputable_layers,
        task_of,
    )
    from ml.training.callbacks import TimeBudget
    from ml.training.data import BatchSequence, validation_split

    started = time.time()
    if time_limit is not None and time_limit <= 0:
        raise ValueError("time_limit must be a positive number of seconds")
    budget = TimeBudget(started + time_limit) if time_limit is not None else None
    if isinstance(config, dict):
        cfg = normalize_config({k: v for k, v in config.items() if k != "_path"})
        cfg["_path"] = config.get("_path", "")
    else:
        cfg = load_config(config)
    key, arch = cfg["key"], cfg["architecture"]
    task = task_of(arch)
    dataset_dir = Path(dataset_dir)
    out_dir = Path(out_dir) if out_dir else Path(models_dir) / key
    run_dir = Path(run_dir) if run_dir else Path("runs") / key
    run_dir.mkdir(parents=True, exist_ok=True)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2

    seed = int(cfg["seed"])
    keras.utils.set_random_seed(seed)
    train_data = load_split(dataset_dir, "train")
    test_data = load_split(dataset_dir, "test")
    if len(train_data) == 0 or len(test_data) == 0:
        raise ValueError(f"{dataset_dir}: needs both train and test rows")
    fit_idx, val_idx = validation_split(
        train_data.subject_ids, float(cfg["data"]["val_fraction"]), seed
    )
    has_val = len(val_idx) > 0
    plan = stages(cfg, epochs)
    logger.info(
        "training %s (%s) on %s: %d fit / %d validation / %d test images, stages %s",
        key, arch, dataset_dir, len(fit_idx), len(val_idx), len(test_data),
        [(s["input_size"], s["epochs"]) for s in plan],
    )  # fmt: skip

    rows: list[dict[str, Any]] = []
    model = None
    checkpoint = None
    stage_log = []
    aug = cfg["data"]["augment"]
    over = cfg["data"]["oversample"]
    cached = () if aug else precomputable_layers(arch)
    fit_model = None
    for i, stage in enumerate(plan):
        size = stage["input_size"]
        if budget is not None and budget.stopped:
            logger.info("time limit: stage %d (%dpx) skipped", i, size)
            stage_log.append({**stage, "epochs_run": 0, "seconds": 0.0, "skipped": "time limit"})
            continue
        built = build_model(arch, {**cfg["model"], "input_size": size})
        if model is not None:
            built.set_weights(model.get_weights())  # fully convolutional: same shapes
        elif init_weights is not None:
            built.load_weights(str(init_weights))
            logger.info("starting from %s", init_weights)
        model = built
        previous_optimizer: Any = fit_model.optimizer if fit_model is not None else None
        fit_model = fit_view(model, cached)
        _compile(fit_model, cfg, task, train_data, fit_idx, stage["learning_rate"])
        carried = carry_optimizer_state(
            previous_optimizer, fit_model.optimizer, fit_model.trainable_variables
        )
        if carried:
            logger.info("stage %d continues the optimizer state (%d variables)", i, carried)
        x_fit, y_fit = _targets(task, train_data, fit_idx, size)
        if cached:
            logger.info("computing %s once for the fit and validation images", ", ".join(cached))
        extras = precompute(model, cached, x_fit)
        validation = _targets(task, train_data, val_idx, size) if has_val else None
        val_extras = (
            precompute(model, cached, validation[0])
            if validation is not None
            else [e[:0] for e in extras]
        )
        to_adapt = adapted_layers(arch)
        sourced = None
        if any(getattr(model.get_layer(n), "adapts_to_sources", False) for n in to_adapt):
            order = np.concatenate([fit_idx, val_idx])
            x_val = validation[0] if validation is not None else x_fit[:0]
            sourced = (
                np.concatenate([x_fit, x_val]),
                [np.concatenate([a, b]) for a, b in zip(extras, val_extras, strict=True)],
                np.asarray(train_data.sources)[order],
            )
        adapted = adapt_layers(model, to_adapt, x_fit, cached, extras, sourced)
        sequence = BatchSequence(
            x_fit,
            y_fit,
            stage["batch_size"],
            seed=seed + i,
            augment=aug,
            oversample_labels=train_data.stage[fit_idx] if (over and task != "segmentation")
            else None,
            oversample_ratio=float((over or {}).get("ratio", 1.0)),
            extra_inputs=extras,
        )  # fmt: skip
        if validation is not None and cached:
            validation = ((validation[0], *val_extras), validation[1])
        callbacks, checkpoint = _callbacks(cfg, i, size, run_dir, rows, has_val)
        if budget is not None:
            callbacks.append(budget)
        before = len(rows)
        stage_started = time.time()
        fit_model.fit(
            sequence,
            validation_data=validation,
            epochs=stage["epochs"],
            callbacks=callbacks,
            verbose=verbose,
        )
        stage_log.append(
            {
                **stage,
                "optimizer_state": "continued" if carried else "fresh",
                **({"adapted": adapted} if adapted else {}),
                "epochs_run": len(rows) - before,
                "seconds": round(time.time() - stage_started, 1),
            }
        )
    assert model is not None and fit_model is not None
    final_rule = cfg["training"]["final_weights"]
    if final_rule == "best" and checkpoint is not None and checkpoint.is_file():
        fit_model.load_weights(checkpoint)  # shares its layers with `model`
    train_seconds = time.time() - started

    provenance = _provenance(train_data, dataset_dir, task)
    config_record = {k: v for k, v in cfg.items() if not k.startswith("_")}
    config_path = str(cfg.get("_path", ""))
    if config_path and Path(config_path).is_absolute():
        # Relative to the working tree when inside it; otherwise it stays absolute.
        with contextlib.suppress(ValueError):
            config_path = str(Path(config_path).relative_to(Path.cwd()))
    training = {
        "config_path": config_path,
        "config": config_record,
        "epochs_run": len(rows),
        "stages": stage_log,
        "seconds": round(train_seconds, 1),
        "machine": machine_info(),
        "seed": seed,
        "final_weights": final_rule,
        "history": "training_log.csv",
        "validation": {"n_val": int(len(val_idx)), "split": "by subject, from train"},
        "epochs_override": epochs,
        "init_weights": _file_record(init_weights) if init_weights is not None else None,
        "time_limit_s": time_limit,
        "stopped_by_time_limit": bool(budget is not None and budget.stopped),
    }
    dataset = {
        "hash": train_data.dataset_hash,
        "dir": dataset_dir.name,
        "n_train": int(len(train_data)),
        "n_fit": int(len(fit_idx)),
        "n_val": int(len(val_idx)),
        "n_test": int(len(test_data)),
        "split": "subject",
        "label_source": train_data.label_source,
        "sources": {
            str(s): int(n)
            for s, n in zip(*np.unique(train_data.sources, return_counts=True), strict=True)
        },
    }

    def write(model_, bundle_key, bundle_dir, display_name, weights_note):
        metrics, artifacts, storage, change = _evaluate_for_bundle(
            model_, task, test_data, cfg["bundle"]["storage"],
            float(cfg["bundle"]["float16_tolerance"]),
        )  # fmt: skip
        model_cfg = {**cfg["model"], "input_size": int(model_.inputs[0].shape[1])}
        manifest = new_manifest(
            key=bundle_key,
            architecture=arch,
            cfg=model_cfg,
            display_name=display_name,
            version=str(cfg["bundle"]["version"]),
            provenance=provenance,
            default=bool(cfg["bundle"]["default"]) if bundle_key == key else False,
            training={**training, "weights_selected": weights_note},
            dataset=dataset,
            metrics=metrics_block(metrics, test_data, "test"),
            description=cfg.get("description", ""),
        )
        manifest["weights"]["float16_metric_change"] = change
        manifest["parameters"] = int(model_.count_params())
        manifest["flops"] = count_flops(model_)
        from ml.models import gradcam_layer

        manifest["gradcam_layer"] = gradcam_layer(arch, model_)
        artifacts.update(curves_artifact(rows, display_name))
        files: dict[str, Any] = dict(artifacts)
        files["training_log.csv"] = run_dir / "training_log.csv"
        path = write_bundle(model_, bundle_dir, manifest, storage_dtype=storage, files=files)
        manifest = read_manifest(path)
        from ml.evaluation.evaluate import summary_line

        logger.info("%s: %s", bundle_key, summary_line(manifest["metrics"], task))
        return path, manifest

    bundle_path, manifest = write(
        model, key, out_dir, cfg["display_name"],
        "best epoch (checkpoint)" if final_rule == "best" else "last epoch",
    )  # fmt: skip
    derived_paths = []
    for spec in cfg["bundle"]["derived"] or []:
        if spec.get("weights", "best") != "best":
            raise ValueError("derived bundles take the best checkpoint (weights: best)")
        if checkpoint is None or not checkpoint.is_file():
            logger.warning("no checkpoint for derived bundle %s", spec["key"])
            continue
        best = build_model(arch, {**cfg["model"]})
        fit_view(best, cached).load_weights(checkpoint)
        path, _ = write(
            best, spec["key"], out_dir.parent / spec["key"],
            spec.get("display_name", spec["key"]), "best epoch (checkpoint)",
        )  # fmt: skip
        derived_paths.append(path)
    return TrainResult(
        key=key,
        bundle_dir=bundle_path,
        manifest=manifest,
        seconds=time.time() - started,
        derived=derived_paths,
    )
