"""Fit each classifier's temperatures on its own validation subjects; measure ECE on the test split.

``spondyscan evaluate --calibrate --dataset DIR [--model K1,K2]``: for every classifier bundle,
the validation subjects of its training run are rebuilt from the manifest (the same
``val_fraction`` and seed, so the same subjects), a temperature per head is fitted on them, and
expected calibration error and NLL are measured on the test split before and after. The result
goes into the manifest (``calibration``) and two reliability diagrams into ``plots/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.calibration import Reliability, apply_temperature, fit_temperature, nll, reliability
from ml.manifest import Calibration, HeadCalibration, Manifest

BINS = 10
HEADS = ("binary", "stage")


@dataclass
class CalibrationRun:
    """One bundle's calibration: the manifest record and the reliability data behind the plots."""

    record: Calibration
    diagrams: dict[str, tuple[Reliability, Reliability]]  # head -> (raw, scaled) on test


def validation_rows(manifest: Manifest, subject_ids: np.ndarray) -> np.ndarray:
    """Indices of the training run's validation subjects among the train split's rows."""
    from ml.data.splits import validation_split

    training = manifest.training
    cfg = (training.config if training else None) or {}
    fraction = float((cfg.get("data") or {}).get("val_fraction", 0.15))
    seed = int(cfg.get("seed", training.seed if training and training.seed is not None else 42))
    _, val_idx = validation_split(subject_ids, fraction, seed)
    return val_idx


def calibrate(
    p_val: dict[str, np.ndarray],
    y_val: dict[str, np.ndarray],
    p_test: dict[str, np.ndarray],
    y_test: dict[str, np.ndarray],
    fitted_on: str,
    bins: int = BINS,
) -> CalibrationRun:
    """Fit a temperature per head on the validation probabilities, score it on the test ones.

    Args:
        p_val: head ("binary", "stage") -> (N, K) validation probabilities.
        y_val: head -> (N,) validation labels.
        p_test: head -> (M, K) test probabilities.
        y_test: head -> (M,) test labels.
        fitted_on: says which images T was fitted on (recorded in the manifest).
        bins: reliability bins.
    """
    heads: dict[str, HeadCalibration] = {}
    diagrams = {}
    for head in HEADS:
        t = fit_temperature(p_val[head], y_val[head])
        scaled = apply_temperature(p_test[head], t)
        raw_rel = reliability(p_test[head], y_test[head], bins)
        new_rel = reliability(scaled, y_test[head], bins)
        heads[head] = HeadCalibration(
            temperature=round(t, 4),
            ece_before=round(raw_rel.ece, 4),
            ece_after=round(new_rel.ece, 4),
            nll_before=round(nll(p_test[head], y_test[head]), 4),
            nll_after=round(nll(scaled, y_test[head]), 4),
        )
        diagrams[head] = (raw_rel, new_rel)
    record = Calibration(
        fitted_on=fitted_on,
        n_fit=len(y_val["binary"]),
        n_eval=len(y_test["binary"]),
        bins=bins,
        binary=heads["binary"],
        stage=heads["stage"],
    )
    return CalibrationRun(record, diagrams)


def calibrate_bundle(
    bundle_dir: str | Path, dataset_dir: str | Path, *, write: bool = True
) -> CalibrationRun:
    """Calibrate one classifier bundle on a prepared dataset (see the module docstring)."""
    from ml.bundle import load_bundle, update_manifest
    from ml.data.dataset import load_split, resize_images
    from ml.fsutil import write_atomic
    from ml.predict import classify

    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    if manifest.task != "classification":
        raise ValueError(f"{bundle_dir} is a {manifest.task} model; only classifiers calibrate")
    train = load_split(dataset_dir, "train")
    test = load_split(dataset_dir, "test")
    trained_on = manifest.dataset.hash if manifest.dataset else None
    if trained_on and trained_on != train.dataset_hash:
        raise ValueError(
            f"{bundle_dir} was trained on dataset {trained_on[:12]}, not {dataset_dir} "
            f"({train.dataset_hash[:12]}): its validation subjects cannot be rebuilt"
        )
    val_idx = validation_rows(manifest, train.subject_ids)
    if len(val_idx) == 0:
        raise ValueError(f"{bundle_dir}: its training run held out no validation subjects")
    size = manifest.input.size

    def probs(images: np.ndarray) -> dict[str, np.ndarray]:
        p_status, p_stage = classify(bundle.model, resize_images(images, size))
        return {"binary": np.asarray(p_status), "stage": np.asarray(p_stage)}

    run = calibrate(
        probs(train.images[val_idx]),
        {"binary": train.as_status[val_idx], "stage": train.stage[val_idx]},
        probs(test.images),
        {"binary": test.as_status, "stage": test.stage},
        fitted_on=(
            f"validation subjects of the training run ({len(set(train.subject_ids[val_idx]))} "
            f"subjects, {len(val_idx)} slices)"
        ),
    )
    if write:
        from ml.evaluation.plots import reliability_png

        plots = Path(bundle_dir) / "plots"
        plots.mkdir(exist_ok=True)
        for head, (raw, scaled) in run.diagrams.items():
            png = reliability_png(raw, scaled, f"{manifest.key}: {head} head (test split)")
            write_atomic(plots / f"reliability_{head}.png", png)
        update_manifest(bundle_dir, {"calibration": run.record.model_dump(mode="json")})
    return run


def summary(key: str, record: Calibration) -> dict[str, Any]:
    """One row of the README's calibration table."""
    row: dict[str, Any] = {"model": key}
    for head in HEADS:
        h: HeadCalibration = getattr(record, head)
        row[head] = {"T": h.temperature, "ece_before": h.ece_before, "ece_after": h.ece_after}
    return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Calibration per classifier: T and ECE before/after for both heads."""
    lines = [
        "| Classifier | AS status T | ECE raw | ECE scaled | Stage T | ECE raw | ECE scaled |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b, s = r["binary"], r["stage"]
        lines.append(
            f"| {r['model']} | {b['T']:.2f} | {b['ece_before']:.3f} | {b['ece_after']:.3f} "
            f"| {s['T']:.2f} | {s['ece_before']:.3f} | {s['ece_after']:.3f} |"
        )
    return "\n".join(lines) + "\n"
