"""The README's results table, rendered from the bundles' manifests (never typed by hand).

``python -m ml.evaluation.results_table [--models-dir models]`` prints Markdown: the design's
reported numbers (image-level split, feature-rule labels) beside ours, measured on the
subject-disjoint test split and stored in each bundle's manifest by training/evaluation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ml.manifest import Manifest

# What the design reported for its models (image-level split: slices of one patient can sit in
# both train and test). Quoted, not measured here.
DESIGN_REPORTED: list[dict[str, Any]] = [
    {"model": "Attention U-Net", "parameters": "7,869,572", "iou": "0.5652"},
    {"model": "Simple CNN", "parameters": "16,870,790", "binary": "96.67 %", "stage": "82.22 %",
     "macro_f1": "0.61", "early": "0.00"},
    {"model": "Hybrid v1 (frozen ImageNet)", "parameters": "~5.2 M", "binary": "54.44 %",
     "stage": "49.44 %"},
    {"model": "Hybrid v2 (frozen ImageNet)", "parameters": "4,838,319", "binary": "52.22 %",
     "stage": "57.78 %"},
]  # fmt: skip


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * float(v):.2f} %"


def _num(v: Any, digits: int = 3) -> str:
    return "—" if v is None else f"{float(v):.{digits}f}"


def _flops(v: Any) -> str:
    return "—" if not v else f"{float(v) / 1e9:.2f} G"


def _training(manifest: Manifest) -> str:
    t = manifest.training
    if t is None or not t.epochs_run:
        return "—"
    minutes = float(t.seconds or 0) / 60
    accelerator = (t.machine or {}).get("accelerator")
    where = f", {str(accelerator).removeprefix('NVIDIA ')}" if accelerator else ", CPU"
    return f"{t.epochs_run} ep, {minutes:.0f} min{where}"


def rows_from_manifests(models_dir: str | Path) -> list[dict[str, Any]]:
    """One row per bundle in ``models_dir`` with its measured headline metrics."""
    from ml.bundle import BundleError, discover_bundles, read_manifest

    rows = []
    for path in discover_bundles(models_dir):
        try:
            m = read_manifest(path)
        except BundleError:
            continue
        metrics = m.metrics.model_dump()
        rows.append({
            "key": m.key, "name": m.name, "task": m.task,
            "parameters": m.parameters, "flops": m.flops,
            "default": m.default, "metrics": metrics, "training": _training(m),
            "split": m.metrics.split, "labels": m.label_provenance.label_source,
            "levels": m.levels, "calibration": m.calibration, "cv": m.cross_validation,
        })  # fmt: skip
    return sorted(rows, key=lambda r: (r["task"] != "segmentation", r["key"]))


def render(models_dir: str | Path) -> str:
    """Markdown: the design's reported table, then ours from the manifests."""
    out = [
        "Design (reported; image-level split, feature-rule labels):",
        "",
        "| model | params | AS status acc | stage acc | stage macro-F1 | Early recall | IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in DESIGN_REPORTED:
        out.append(
            f"| {d['model']} | {d['parameters']} | {d.get('binary', '—')} | {d.get('stage', '—')} "
            f"| {d.get('macro_f1', '—')} | {d.get('early', '—')} | {d.get('iou', '—')} |"
        )
    rows = rows_from_manifests(models_dir)
    out += [
        "",
        "Ours (measured on the subject-disjoint test split; from each bundle's manifest):",
        "",
        "| key | model | params | FLOPs | AS status acc | AS ROC AUC | stage acc | stage macro-F1 "
        "| Early recall | IoU | Dice | trained | labels |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metrics"]
        key = f"`{r['key']}`" + (" (default)" if r["default"] else "")
        out.append(
            f"| {key} | {r['name']} | {r['parameters']:,} | {_flops(r['flops'])} "
            f"| {_pct(m.get('binary_accuracy'))} | {_num(m.get('binary_roc_auc'))} "
            f"| {_pct(m.get('stage_accuracy'))} | {_num(m.get('stage_macro_f1'))} "
            f"| {_num(m.get('early_recall'))} | {_num(m.get('iou'))} | {_num(m.get('dice'))} "
            f"| {r['training']} | {r['labels']} |"
        )
    if not rows:
        out.append("| (no bundles in this checkout) | | | | | | | | | | | | |")
    out += _cv_table(rows) + _levels_table(rows) + _calibration_table(rows)
    return "\n".join(out) + "\n"


def _cv_table(rows: list[dict[str, Any]]) -> list[str]:
    """Cross-validated metrics beside the single split's, with subject-bootstrap intervals."""
    done = [r for r in rows if r["cv"] is not None]
    if not done:
        return []
    out = [
        "",
        "Cross-validated (k folds over all 72 subjects, grouped by subject, stratified by source; "
        "pooled held-out predictions, 95 % interval over subjects) beside the single test split:",
        "",
        "| key | folds | metric | single split | cross-validated |",
        "|---|---|---|---|---|",
    ]
    for r in done:
        cv = r["cv"]
        for name, m in cv.metrics.items():
            single = r["metrics"].get(name)
            lo, hi = m.ci95
            fmt = _pct if name.endswith("accuracy") else _num
            out.append(
                f"| `{r['key']}` | {cv.k} | {name} | {fmt(single)} "
                f"| {fmt(m.pooled)} ({fmt(lo)}-{fmt(hi)}) |"
            )
    return out


def _levels_table(rows: list[dict[str, Any]]) -> list[str]:
    """Per-level Dice of each segmenter (bodies named from the column), with subject CIs."""
    seg = [r for r in rows if r["levels"] is not None]
    if not seg:
        return []
    out = [
        "",
        "Per-level Dice of the segmenters, levels named from the column's geometry (the lowest "
        "body is L5), on the test slices whose levels are known (95 % interval over subjects):",
        "",
        "| key | L1 | L2 | L3 | L4 | L5 | every level named right | slices |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in seg:
        lv = r["levels"]
        cells = []
        for name in ("L1", "L2", "L3", "L4", "L5"):
            d = lv.per_level.get(name)
            cells.append(f"{d.dice:.3f} ({d.ci95[0]:.2f}-{d.ci95[1]:.2f})" if d else "—")
        out.append(
            f"| `{r['key']}` | {' | '.join(cells)} | {lv.all_levels_named:.1%} | {lv.slices} |"
        )
    return out


def _calibration_table(rows: list[dict[str, Any]]) -> list[str]:
    """Each classifier's temperatures and its test-split ECE before and after scaling."""
    cls = [r for r in rows if r["calibration"] is not None]
    if not cls:
        return []
    out = [
        "",
        "Calibration (temperature scaling fitted on each training run's validation subjects, "
        "applied in serving; expected calibration error on the test split, 10 bins):",
        "",
        "| key | AS status T | ECE raw -> scaled | stage T | ECE raw -> scaled |",
        "|---|---|---|---|---|",
    ]
    for r in cls:
        b, g = r["calibration"].binary, r["calibration"].stage
        out.append(
            f"| `{r['key']}` | {b.temperature:.2f} | {b.ece_before:.3f} -> {b.ece_after:.3f} "
            f"| {g.temperature:.2f} | {g.ece_before:.3f} -> {g.ece_after:.3f} |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", default="models")
    args = parser.parse_args(argv)
    sys.stdout.write(render(args.models_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
