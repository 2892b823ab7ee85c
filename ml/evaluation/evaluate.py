"""Evaluate a model on a dataset split; write metrics, plots and reports into its bundle."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import logging
from pathlib import Path
from typing import Any

from ml.evaluation.metrics import classification_metrics, segmentation_metrics
from ml.evaluation.plots import confusion_matrix_png, curves_png
from ml.manifest import Manifest, Metrics

logger = logging.getLogger(__name__)


def model_input_size(model) -> int:
    """Side length of a model's square input."""
    return int(model.inputs[0].shape[1])


def evaluate_model(model, task: str, data, batch_size: int = 16) -> tuple[dict, dict[str, bytes]]:
    """Predict a split and score it.

    Args:
        model: a built Keras model.
        task: ``classification`` or ``segmentation``.
        data: a ``DatasetArrays`` split (images at 256; resized to the model's input size).
        batch_size: images per forward pass.

    Returns:
        ``(metrics, artifacts)``: the metrics dict, and files to store with the bundle
        (relative name -> bytes: confusion matrices, per-image CSV).
    """
    from ml.data.dataset import resize_images, resize_masks
    from ml.predict import classify, segment

    size = model_input_size(model)
    images = resize_images(data.images, size)
    artifacts: dict[str, bytes] = {}
    if len(images) == 0:
        raise ValueError("the split holds no images")
    if task == "classification":
        p_status, p_stage = classify(model, images, batch_size)
        metrics = classification_metrics(
            data.as_status, data.stage, p_status, p_stage, data.sources
        )
        artifacts["plots/confusion_binary.png"] = confusion_matrix_png(
            metrics["binary"]["confusion_matrix"], metrics["binary"]["labels"], "AS status"
        )
        artifacts["plots/confusion_stage.png"] = confusion_matrix_png(
            metrics["stage"]["confusion_matrix"], metrics["stage"]["labels"], "Stage"
        )
        rows = [
            {
                "image_id": r.get("image_id", i),
                "source": r.get("source", ""),
                "as_status": int(data.as_status[i]),
                "pred_as_status": int(p_status[i].argmax()),
                "p_positive": round(float(p_status[i, 1]), 6),
                "stage": int(data.stage[i]),
                "pred_stage": int(p_stage[i].argmax()),
            }
            for i, r in enumerate(data.rows)
        ]
    elif task == "segmentation":
        masks = resize_masks(data.masks, size)
        prob = segment(model, images, max(1, batch_size // 2))
        metrics, per_image = segmentation_metrics(masks, prob, data.sources)
        rows = [
            {
                "image_id": r.get("image_id", i),
                "source": r.get("source", ""),
                "iou": round(float(per_image["iou"][i]), 6),
                "dice": round(float(per_image["dice"][i]), 6),
            }
            for i, r in enumerate(data.rows)
        ]
    else:
        raise ValueError(f"unknown task {task!r}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    artifacts["metrics_per_image.csv"] = buf.getvalue().encode()
    return metrics, artifacts


def metrics_block(metrics: dict[str, Any], data, split: str) -> dict[str, Any]:
    """Wrap measured metrics with what they were measured on, for the manifest."""
    return {
        "split": split,
        "dataset": Path(data.dataset_dir).name,
        "dataset_hash": data.dataset_hash,
        "label_source": data.label_source,
        "evaluated": _dt.date.today().isoformat(),
        **metrics,
    }


def history_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a training_log.csv (numbers parsed)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        parsed: dict[str, Any] = {}
        for k, v in r.items():
            try:
                parsed[k] = float(v)
            except (TypeError, ValueError):
                parsed[k] = v
        out.append(parsed)
    return out


def curves_artifact(rows: list[dict[str, Any]], title: str) -> dict[str, bytes]:
    """``plots/curves.png`` from training-log rows (nothing when there are none)."""
    return {"plots/curves.png": curves_png(rows, title)} if rows else {}


def resolve_model(ref: str | Path, models_dir: str | Path = "models") -> Path:
    """A bundle folder from a path or a registry key under ``models_dir``."""
    p = Path(ref)
    if (p / "manifest.json").is_file():
        return p
    candidate = Path(models_dir) / str(ref)
    if (candidate / "manifest.json").is_file():
        return candidate
    raise FileNotFoundError(2, "no bundle (manifest.json) at this path or key", str(ref))


def write_docs(bundle_dir: Path, manifest: Manifest, artifacts: dict[str, bytes]) -> None:
    """(Re)write README.md, REPORT.md and artifacts of a bundle, each file atomically."""
    from ml.bundle import write_text_atomic
    from ml.fsutil import write_atomic
    from ml.model_card import render_model_card, render_report

    for name, data in artifacts.items():
        write_atomic(bundle_dir / name, data)
    write_text_atomic(bundle_dir / "README.md", render_model_card(manifest))
    write_text_atomic(bundle_dir / "REPORT.md", render_report(manifest))


def evaluate_bundle(
    model: str | Path,
    dataset_dir: str | Path,
    split: str = "test",
    models_dir: str | Path = "models",
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate a bundle on a split and (by default) record the result in the bundle.

    The manifest is rewritten atomically with the new ``metrics`` (weights untouched, so its
    hash stays valid), and README.md, REPORT.md, plots and per-image metrics are refreshed.

    Returns:
        The manifest's new ``metrics`` block.
    """
    from ml.bundle import load_bundle, update_manifest
    from ml.data.dataset import load_split

    bundle_dir = resolve_model(model, models_dir)
    bundle = load_bundle(bundle_dir)
    data = load_split(dataset_dir, split)
    if len(data) == 0:
        raise ValueError(f"split {split!r} of {dataset_dir} holds no images")
    metrics, artifacts = evaluate_model(bundle.model, bundle.task, data)
    block = metrics_block(metrics, data, split)
    if write:
        manifest = update_manifest(bundle_dir, {"metrics": block})
        log = bundle_dir / "training_log.csv"
        if log.is_file():
            artifacts.update(curves_artifact(history_rows(log), manifest.name))
        write_docs(bundle_dir, manifest, artifacts)
        logger.info("updated %s with %s metrics", bundle_dir, split)
    return block


def summary_line(block: dict[str, Any] | Metrics, task: str) -> str:
    """One human line of headline metrics."""
    values = block.model_dump() if isinstance(block, Metrics) else block

    def f(key: str) -> str:
        value = values.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    if task == "classification":
        return (
            f"AS status acc {f('binary_accuracy')}, AUC {f('binary_roc_auc')}, "
            f"stage acc {f('stage_accuracy')}, stage macro-F1 {f('stage_macro_f1')}, "
            f"Early recall {f('early_recall')}"
        )
    return f"IoU {f('iou')}, Dice {f('dice')} (pooled IoU {f('iou_pooled')})"
