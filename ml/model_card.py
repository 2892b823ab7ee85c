"""Markdown for a bundle: the model card (README.md) and the evaluation report (REPORT.md)."""

from __future__ import annotations

from typing import Any

from ml import RESEARCH_USE_NOTICE
from ml.manifest import Manifest


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{100 * value:.2f} %" if pct else f"{value:.4f}"
    return str(value)


def _human(n: int | None) -> str:
    if not n:
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def headline_rows(manifest: Manifest) -> list[tuple[str, str]]:
    """(name, value) pairs of the headline metrics, for tables."""
    m = manifest.metrics
    if manifest.task == "classification":
        return [
            ("AS status accuracy", _fmt(m.binary_accuracy, pct=True)),
            ("AS status ROC AUC", _fmt(m.binary_roc_auc)),
            ("stage accuracy", _fmt(m.stage_accuracy, pct=True)),
            ("stage macro-F1", _fmt(m.stage_macro_f1)),
            ("Early-stage recall", _fmt(m.early_recall)),
        ]
    return [
        ("IoU (mean per image)", _fmt(m.iou)),
        ("Dice (mean per image)", _fmt(m.dice)),
        ("IoU (pooled pixels)", _fmt(m.iou_pooled)),
    ]


def _provenance_lines(manifest: Manifest) -> list[str]:
    prov = manifest.label_provenance
    rule = f" (rule {prov.rule_version})" if prov.rule_version else ""
    lines = [f"- label source: `{prov.label_source}`{rule}", f"- {prov.description}"]
    if prov.mask_kind:
        lines.append(f"- masks: `{prov.mask_kind}`: {prov.mask_description or ''}")
    return lines


def _training_lines(manifest: Manifest) -> list[str]:
    t = manifest.training.model_dump() if manifest.training else {}
    d = manifest.dataset.model_dump() if manifest.dataset else {}
    lines = ["## Training", ""]
    if t.get("epochs_run"):
        machine = (t.get("machine") or {}).get("summary", "?")
        lines.append(
            f"- config: `{t.get('config_path') or ''}`; epochs run: {t.get('epochs_run')}; "
            f"time: {(t.get('seconds') or 0) / 60:.1f} min on {machine}"
        )
    else:
        lines.append(f"- {t.get('note', 'not trained')}")
    if d:
        lines.append(
            f"- dataset `{d.get('dir')}` (sha256 {str(d.get('hash'))[:12]}…): "
            f"{d.get('n_fit')} fit / {d.get('n_val')} validation / {d.get('n_test')} test images, "
            f"split by {d.get('split')}"
        )
    return lines


def _evaluated(manifest: Manifest) -> bool:
    return bool(manifest.metrics.model_dump(exclude_none=True, exclude_defaults=True))


def _explanation_lines(manifest: Manifest) -> list[str]:
    """The measured faithfulness per explanation method, the default in bold."""
    ex = manifest.explanation
    if ex is None:
        return []
    lines = [
        "",
        "## Explanation methods",
        "",
        f"Default method: **{ex.default_method}** ({ex.criterion}), measured on "
        f"{len(ex.slices)} `{ex.split}` slices of {ex.subjects} subjects, deletion/insertion "
        f"with {ex.steps} steps and {ex.n_random} random order(s); means with {ex.ci} "
        "intervals (`spondyscan evaluate --faithfulness`).",
        "",
        "| method | score | deletion AUC | insertion AUC | empty maps |",
        "|---|---|---|---|---|",
    ]
    for method, r in ex.measured.items():
        name = f"**{method}**" if method == ex.default_method else str(method)
        lines.append(
            f"| {name} | {r.score:.3f} [{r.score_ci[0]:.3f}, {r.score_ci[1]:.3f}] "
            f"| {r.deletion_auc:.3f} [{r.deletion_auc_ci[0]:.3f}, {r.deletion_auc_ci[1]:.3f}] "
            f"| {r.insertion_auc:.3f} [{r.insertion_auc_ci[0]:.3f}, "
            f"{r.insertion_auc_ci[1]:.3f}] | {r.empty_fraction:.0%} |"
        )
    return lines


def _cross_validation_lines(manifest: Manifest) -> list[str]:
    """Cross-validated metrics (pooled, interval, each fold) beside the single split's."""
    cv = manifest.cross_validation
    if cv is None:
        return []
    single = manifest.metrics.model_dump()
    run = f"`spondyscan evaluate --cv {cv.k}`" + (f", {cv.evaluated}" if cv.evaluated else "")
    note = f" {cv.note[:1].upper()}{cv.note[1:]}." if cv.note else ""
    fold_names = "".join(f" fold {f.fold} |" for f in cv.folds)
    lines = [
        "",
        "## Cross-validation",
        "",
        f"{cv.k} folds over {cv.subjects} subjects ({cv.slices} slices), grouped by subject and "
        "spread evenly within each source; the config retrained on each fold's other subjects; "
        f"held-out predictions pooled; 95 % interval by resampling subjects ({run}).{note}",
        "",
        f"| metric | single split | cross-validated |{fold_names}",
        "|---|---|---|" + "---|" * len(cv.folds),
    ]
    for name, m in cv.metrics.items():
        pct = name.endswith("accuracy")
        folds = " | ".join(_fmt(f.metrics.get(name), pct) for f in cv.folds)
        lines.append(
            f"| {name} | {_fmt(single.get(name), pct)} | {_fmt(m.pooled, pct)} "
            f"[{_fmt(m.ci95[0], pct)}, {_fmt(m.ci95[1], pct)}] | {folds} |"
        )
    if cv.by_source:
        names = list(cv.metrics)
        lines += [
            "",
            "Pooled by source (held-out slices of each source's subjects):",
            "",
            "| source | subjects | slices | " + " | ".join(names) + " |",
            "|---|---|---|" + "---|" * len(names),
        ]
        for source, v in cv.by_source.items():
            shown = " | ".join(_fmt(v.get(n), n.endswith("accuracy")) for n in names)
            lines.append(f"| {source} | {v['subjects']:.0f} | {v['n']:.0f} | {shown} |")
    if cv.fold_results:
        lines += [
            "",
            f"Each fold's provenance and held-out per-slice scores: `{cv.fold_results}`.",
        ]
    return lines


def render_model_card(manifest: Manifest) -> str:
    """README.md of a bundle: what the model is, how it was trained, what it scored, limits."""
    w, m = manifest.weights, manifest.metrics
    init = "ImageNet (local weights file)" if w.imagenet else "random (no pretrained)"
    lines = [
        f"# {manifest.name} (`{manifest.key}`)",
        "",
        f"> **{RESEARCH_USE_NOTICE}**",
        "",
        f"- task: {manifest.task}; architecture: `{manifest.architecture}`; "
        f"version {manifest.version}",
        f"- parameters: {manifest.parameters:,}" if manifest.parameters else "",
        f"- FLOPs per image (forward): {_human(manifest.flops)}",
        f"- input: {manifest.input.shape} float32 in [0, 1] "
        f"({manifest.input.preprocessing.get('name')})",
        f"- weights: {w.storage_dtype or '?'} storage; initialisation {init}",
    ]
    if manifest.task == "classification":
        lines.append(f"- Grad-CAM layer: `{manifest.gradcam_layer}`")
    if manifest.attention_layers:
        names = ", ".join(f"`{n}`" for n in manifest.attention_layers)
        lines.append(f"- attention layers (second output = attention weights): {names}")
    lines += ["", "## Labels", "", *_provenance_lines(manifest), ""]
    if manifest.task == "classification":
        lines += [
            "A model trained on feature-rule labels measures how well a network learns the "
            "labelling rule from the pixels, not how well it detects ankylosing spondylitis.",
            "",
        ]
    lines += _training_lines(manifest)
    lines += ["", "## Results", ""]
    if _evaluated(manifest):
        lines += [f"On the `{m.split or 'test'}` split ({m.n} images):", ""]
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in headline_rows(manifest)]
        lines += ["", "Details: [REPORT.md](REPORT.md)."]
    else:
        lines.append("Not evaluated yet (`spondyscan evaluate`).")
    lines += _cross_validation_lines(manifest)
    lines += _explanation_lines(manifest)
    lines += ["", "## Intended use", "", manifest.intended_use or RESEARCH_USE_NOTICE, ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


def _head_table(report: dict[str, Any]) -> list[str]:
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, r in report["per_class"].items():
        lines.append(
            f"| {name} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])} "
            f"| {r['support']} |"
        )
    for label in ("macro_avg", "weighted_avg"):
        r = report[label]
        lines.append(
            f"| *{label.replace('_', ' ')}* | {_fmt(r['precision'])} | {_fmt(r['recall'])} "
            f"| {_fmt(r['f1'])} | |"
        )
    return lines


def _per_source_lines(manifest: Manifest) -> list[str]:
    per_source = manifest.metrics.per_source
    if not per_source:
        return []
    if manifest.task == "classification":
        lines = ["## Per source", "", "| source | n | AS status acc. | stage acc. |",
                 "|---|---|---|---|"]  # fmt: skip
        for src, r in per_source.items():
            lines.append(
                f"| {src} | {r['n']} | {_fmt(r['binary_accuracy'], True)} "
                f"| {_fmt(r['stage_accuracy'], True)} |"
            )
    else:
        lines = ["## Per source", "", "| source | n | IoU | Dice |", "|---|---|---|---|"]
        for src, r in per_source.items():
            lines.append(f"| {src} | {r['n']} | {_fmt(r['iou'])} | {_fmt(r['dice'])} |")
    return [*lines, ""]


def render_report(manifest: Manifest) -> str:
    """REPORT.md: every measured number of the last evaluation, with the plots."""
    m = manifest.metrics
    lines = [
        f"# Evaluation report: {manifest.name}",
        "",
        f"> {RESEARCH_USE_NOTICE}",
        "",
        f"Split `{m.split or '?'}` of dataset `{m.dataset or '?'}` "
        f"(sha256 {str(m.dataset_hash or '')[:12]}…), {m.n or 0} images, "
        f"evaluated {m.evaluated or '?'}.",
        "",
        *_provenance_lines(manifest),
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in headline_rows(manifest)],
        "",
    ]
    if manifest.task == "classification" and m.binary and m.stage:
        lines += ["## AS status", "", *_head_table(m.binary), ""]
        lines += ["![AS status confusion matrix](plots/confusion_binary.png)", ""]
        lines += ["## Stage", "", *_head_table(m.stage), ""]
        lines += ["![stage confusion matrix](plots/confusion_stage.png)", ""]
        lines += _per_source_lines(manifest)
    elif manifest.task == "segmentation":
        lines += _per_source_lines(manifest)
        lines += ["Per-image IoU and Dice: [metrics_per_image.csv](metrics_per_image.csv).", ""]
    history = manifest.training.model_dump().get("history") if manifest.training else None
    if history:
        lines += ["## Training curves", "", "![curves](plots/curves.png)", ""]
    return "\n".join(lines) + "\n"
