"""The fit loop: config + prepared dataset -> trained model -> evaluated bundle(s).

Seeds are fixed; the train split is divided into fit and validation subsets by subject; each
stage of the schedule (U-Nets: low resolution first, then full resolution) builds the model at
its size and inherits the previous stage's weights; Keras callbacks do early stopping, learning
rate reduction and best-epoch checkpoints; the test split is evaluated at the end and the bundle
is written with its manifest, model card, report, curves and log.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml.manifest import Manifest
from ml.training.caching import adapt_layers, carry_optimizer_state, fit_view, precompute
from ml.training.callbacks import make_callbacks
from ml.training.config import load_config, stages
from ml.training.optim import compile_for_task
from ml.training.records import dataset_record, file_record, machine_info, provenance

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced."""

    key: str
    bundle_dir: Path
    manifest: Manifest
    seconds: float
    derived: list[Path] = field(default_factory=list)


def _targets(task: str, data, idx: np.ndarray, size: int):
    from ml.data.dataset import resize_images, resize_masks

    x = resize_images(data.images[idx], size)
    if task == "segmentation":
        return x, resize_masks(data.masks[idx], size)
    return x, {"binary_output": data.as_status[idx], "stage_output": data.stage[idx]}


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


@dataclass
class _Run:
    """One training run's inputs and what its stages have produced so far."""

    cfg: dict[str, Any]
    dataset_dir: Path
    run_dir: Path
    train_data: Any
    test_data: Any
    fit_idx: np.ndarray
    val_idx: np.ndarray
    verbose: int
    budget: Any = None
    init_weights: str | Path | None = None
    init_from: Path | None = None  # a bundle folder (training.init_from)
    rows: list[dict[str, Any]] = field(default_factory=list)
    stage_log: list[dict[str, Any]] = field(default_factory=list)
    model: Any = None
    fit_model: Any = None
    checkpoint: Path | None = None

    @property
    def arch(self) -> str:
        return str(self.cfg["architecture"])

    @property
    def task(self) -> str:
        from ml.models import spec

        return spec(self.arch).task

    @property
    def cached(self) -> tuple[str, ...]:
        """Weightless layers whose outputs are computed once (not with augmentation)."""
        from ml.models import spec

        return () if self.cfg["data"]["augment"] else spec(self.arch).precomputable

    @property
    def has_val(self) -> bool:
        return len(self.val_idx) > 0


def _stage_model(run: _Run, size: int):
    """The model at this stage's size, carrying the previous stage's weights."""
    from ml.models import build_model

    built = build_model(run.arch, {**run.cfg["model"], "input_size": size})
    if run.model is not None:
        built.set_weights(run.model.get_weights())  # fully convolutional: same shapes
    elif run.init_weights is not None:
        built.load_weights(str(run.init_weights))
        logger.info("starting from %s", run.init_weights)
    elif run.init_from is not None:
        from ml.training.warm_start import transfer_layers

        shared, new = transfer_layers(run.init_from, built)
        logger.info(
            "starting from %s: %d layers carried over, %d new (%s)",
            run.init_from, len(shared), len(new), ", ".join(new) or "none",
        )  # fmt: skip
    return built


def _adapt(run: _Run, x_fit, extras, validation, val_extras) -> dict[str, Any]:
    """Adapt the spec's adapted layers (source-aware ones on the whole training split)."""
    from ml.models import spec

    model, to_adapt = run.model, spec(run.arch).adapted
    sourced = None
    if any(getattr(model.get_layer(n), "adapts_to_sources", False) for n in to_adapt):
        order = np.concatenate([run.fit_idx, run.val_idx])
        x_val = validation[0] if validation is not None else x_fit[:0]
        sourced = (
            np.concatenate([x_fit, x_val]),
            [np.concatenate([a, b]) for a, b in zip(extras, val_extras, strict=True)],
            np.asarray(run.train_data.sources)[order],
        )
    return adapt_layers(model, to_adapt, x_fit, run.cached, extras, sourced)


def _fit_stage(run: _Run, i: int, stage: dict[str, Any]) -> None:
    """Build, prepare and fit one stage of the schedule; logs it in ``run.stage_log``."""
    from ml.training.data import BatchSequence

    cfg, task, cached, size = run.cfg, run.task, run.cached, stage["input_size"]
    previous_optimizer: Any = run.fit_model.optimizer if run.fit_model is not None else None
    run.model = _stage_model(run, size)
    run.fit_model = fit_view(run.model, cached)
    compile_for_task(run.fit_model, cfg, task, run.train_data, run.fit_idx, stage["learning_rate"])
    carried = carry_optimizer_state(
        previous_optimizer, run.fit_model.optimizer, run.fit_model.trainable_variables
    )
    if carried:
        logger.info("stage %d continues the optimizer state (%d variables)", i, carried)
    x_fit, y_fit = _targets(task, run.train_data, run.fit_idx, size)
    if cached:
        logger.info("computing %s once for the fit and validation images", ", ".join(cached))
    extras = precompute(run.model, cached, x_fit)
    validation = _targets(task, run.train_data, run.val_idx, size) if run.has_val else None
    val_extras = (
        precompute(run.model, cached, validation[0])
        if validation is not None
        else [e[:0] for e in extras]
    )
    adapted = _adapt(run, x_fit, extras, validation, val_extras)
    over = cfg["data"]["oversample"]
    sequence = BatchSequence(
        x_fit,
        y_fit,
        stage["batch_size"],
        seed=int(cfg["seed"]) + i,
        augment=cfg["data"]["augment"],
        oversample_labels=run.train_data.stage[run.fit_idx] if (over and task != "segmentation")
        else None,
        oversample_ratio=float((over or {}).get("ratio", 1.0)),
        extra_inputs=extras,
    )  # fmt: skip
    if validation is not None and cached:
        validation = ((validation[0], *val_extras), validation[1])
    callbacks, run.checkpoint = make_callbacks(cfg, i, size, run.run_dir, run.rows, run.has_val)
    if run.budget is not None:
        callbacks.append(run.budget)
    before, stage_started = len(run.rows), time.time()
    run.fit_model.fit(
        sequence,
        validation_data=validation,
        epochs=stage["epochs"],
        callbacks=callbacks,
        verbose=run.verbose,
    )
    run.stage_log.append(
        {
            **stage,
            "optimizer_state": "continued" if carried else "fresh",
            **({"adapted": adapted} if adapted else {}),
            "epochs_run": len(run.rows) - before,
            "seconds": round(time.time() - stage_started, 1),
        }
    )


def _training_record(
    run: _Run, seconds: float, epochs: Any, time_limit: float | None
) -> dict[str, Any]:
    config_path = str(run.cfg.get("_path", ""))
    if config_path and Path(config_path).is_absolute():
        # Relative to the working tree when inside it; otherwise it stays absolute.
        with contextlib.suppress(ValueError):
            config_path = str(Path(config_path).relative_to(Path.cwd()))
    return {
        "config_path": config_path,
        "config": {k: v for k, v in run.cfg.items() if not k.startswith("_")},
        "epochs_run": len(run.rows),
        "stages": run.stage_log,
        "seconds": round(seconds, 1),
        "machine": machine_info(),
        "seed": int(run.cfg["seed"]),
        "final_weights": run.cfg["training"]["final_weights"],
        "history": "training_log.csv",
        "validation": {"n_val": int(len(run.val_idx)), "split": "by subject, from train"},
        "epochs_override": epochs,
        "init_weights": file_record(run.init_weights) if run.init_weights is not None else None,
        "init_from": _init_from_record(run.init_from),
        "time_limit_s": time_limit,
        "stopped_by_time_limit": bool(run.budget is not None and run.budget.stopped),
    }


def _bundle_folder(name: str, models_dir: Path) -> Path:
    """training.init_from: a folder with a manifest, or a bundle key under ``models_dir``."""
    for candidate in (Path(name), models_dir / name):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise ValueError(f"training.init_from: no bundle {name!r} (as a folder or in {models_dir})")


def _init_from_record(folder: Path | None) -> dict[str, Any] | None:
    """The warm-start bundle in the manifest: its key, version and weights (name, sha256)."""
    if folder is None:
        return None
    from ml.bundle import read_manifest

    source = read_manifest(folder)
    return {
        "bundle": source.key,
        "version": source.version,
        "weights": file_record(folder / source.weights.file),
    }


def _write(
    run: _Run,
    model,
    bundle_key: str,
    bundle_dir: Path,
    display_name: str,
    weights_note: str,
    training: dict[str, Any],
) -> tuple[Path, Manifest]:
    """Evaluate ``model`` on the test split and write it as a bundle."""
    from ml.bundle import LABEL_RULE, new_manifest, read_manifest, write_bundle
    from ml.evaluation.evaluate import curves_artifact, metrics_block, summary_line

    cfg, task = run.cfg, run.task
    metrics, artifacts, storage, change = _evaluate_for_bundle(
        model, task, run.test_data, cfg["bundle"]["storage"],
        float(cfg["bundle"]["float16_tolerance"]),
    )  # fmt: skip
    manifest = new_manifest(
        key=bundle_key,
        architecture=run.arch,
        cfg={**cfg["model"], "input_size": int(model.inputs[0].shape[1])},
        display_name=display_name,
        version=str(cfg["bundle"]["version"]),
        provenance=provenance(run.train_data, run.dataset_dir, task),
        default=bool(cfg["bundle"]["default"]) if bundle_key == cfg["key"] else False,
        training={**training, "weights_selected": weights_note},
        dataset=dataset_record(
            run.train_data, run.test_data, run.dataset_dir, run.fit_idx, run.val_idx
        ),
        metrics=metrics_block(metrics, run.test_data, "test"),
        description=cfg.get("description", ""),
    )
    manifest.weights.float16_metric_change = change
    artifacts.update(curves_artifact(run.rows, display_name))
    files: dict[str, Any] = dict(artifacts)
    files["training_log.csv"] = run.run_dir / "training_log.csv"
    rule = run.dataset_dir / LABEL_RULE
    if run.train_data.label_source.startswith("feature_rule") and rule.is_file():
        # The rule that labelled the training data travels with the model that learnt it.
        files[LABEL_RULE] = rule
    path = write_bundle(model, bundle_dir, manifest, storage_dtype=storage, files=files)
    manifest = read_manifest(path)
    logger.info("%s: %s", bundle_key, summary_line(manifest.metrics, task))
    return path, manifest


def _derived(run: _Run, out_dir: Path, training: dict[str, Any]) -> list[Path]:
    """Extra bundles from the run's best checkpoint (e.g. ``unet_best``)."""
    from ml.models import build_model

    paths = []
    for derived in run.cfg["bundle"]["derived"] or []:
        if derived.get("weights", "best") != "best":
            raise ValueError("derived bundles take the best checkpoint (weights: best)")
        if run.checkpoint is None or not run.checkpoint.is_file():
            logger.warning("no checkpoint for derived bundle %s", derived["key"])
            continue
        best = build_model(run.arch, {**run.cfg["model"]})
        fit_view(best, run.cached).load_weights(run.checkpoint)
        path, _ = _write(
            run, best, derived["key"], out_dir.parent / derived["key"],
            derived.get("display_name", derived["key"]), "best epoch (checkpoint)", training,
        )  # fmt: skip
        paths.append(path)
    return paths


def _start(
    config: str | Path | dict[str, Any],
    dataset_dir: Path,
    run_dir: Path | None,
    verbose: int | None,
    init_weights: str | Path | None,
    budget: Any,
) -> _Run:
    """Load the config and the dataset and split the training subjects into fit/validation."""
    import keras

    from ml.data.dataset import load_split
    from ml.data.splits import validation_split

    cfg = load_config(config)
    seed = int(cfg["seed"])
    keras.utils.set_random_seed(seed)
    train_data = load_split(dataset_dir, "train")
    test_data = load_split(dataset_dir, "test")
    if len(train_data) == 0 or len(test_data) == 0:
        raise ValueError(f"{dataset_dir}: needs both train and test rows")
    fit_idx, val_idx = validation_split(
        train_data.subject_ids, float(cfg["data"]["val_fraction"]), seed
    )
    run_dir = run_dir or Path("runs") / cfg["key"]
    run_dir.mkdir(parents=True, exist_ok=True)
    return _Run(
        cfg=cfg,
        dataset_dir=dataset_dir,
        run_dir=run_dir,
        train_data=train_data,
        test_data=test_data,
        fit_idx=fit_idx,
        val_idx=val_idx,
        verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose,
        budget=budget,
        init_weights=init_weights,
    )


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
    from ml.training.callbacks import TimeBudget

    started = time.time()
    if time_limit is not None and time_limit <= 0:
        raise ValueError("time_limit must be a positive number of seconds")
    budget = TimeBudget(started + time_limit) if time_limit is not None else None
    dataset_dir = Path(dataset_dir)
    run = _start(
        config, dataset_dir, Path(run_dir) if run_dir else None, verbose, init_weights, budget
    )
    key = run.cfg["key"]
    out_dir = Path(out_dir) if out_dir else Path(models_dir) / key
    if run.cfg["training"]["init_from"] is not None and init_weights is None:
        run.init_from = _bundle_folder(run.cfg["training"]["init_from"], Path(models_dir))
    plan = stages(run.cfg, epochs)
    logger.info(
        "training %s (%s) on %s: %d fit / %d validation / %d test images, stages %s",
        key, run.arch, dataset_dir, len(run.fit_idx), len(run.val_idx), len(run.test_data),
        [(s["input_size"], s["epochs"]) for s in plan],
    )  # fmt: skip
    for i, stage in enumerate(plan):
        if budget is not None and budget.stopped:
            logger.info("time limit: stage %d (%dpx) skipped", i, stage["input_size"])
            run.stage_log.append(
                {**stage, "epochs_run": 0, "seconds": 0.0, "skipped": "time limit"}
            )
            continue
        _fit_stage(run, i, stage)
    assert run.model is not None and run.fit_model is not None
    final_rule = run.cfg["training"]["final_weights"]
    if final_rule == "best" and run.checkpoint is not None and run.checkpoint.is_file():
        run.fit_model.load_weights(run.checkpoint)  # shares its layers with `model`
    training = _training_record(run, time.time() - started, epochs, time_limit)
    note = "best epoch (checkpoint)" if final_rule == "best" else "last epoch"
    bundle_path, manifest = _write(
        run, run.model, key, out_dir, run.cfg["display_name"], note, training
    )
    return TrainResult(
        key=key,
        bundle_dir=bundle_path,
        manifest=manifest,
        seconds=time.time() - started,
        derived=_derived(run, out_dir, training),
    )
