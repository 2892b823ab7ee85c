"""Markdown for a bundle: the model card (README.md) and the evaluation report (REPORT.md)."""

from __future__ import annotations

from typing import Any

from ml import RESEARCH_USE_NOTICE


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


def headline_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) pairs of the headline metrics, for tables."""
    m = manifest.get("metrics") or {}
    if manifest["task"] == "classification":
        return [
            ("AS status accuracy", _fmt(m.get("binary_accuracy"), pct=True)),
            ("AS status ROC AUC", _fmt(m.get("binary_roc_auc"))),
            ("stage accuracy", _fmt(m.get("stage_accuracy"), pct=True)),
            ("stage macro-F1", _fmt(m.get("stage_macro_f1"))),
            ("Early-stage recall", _fmt(m.get("early_recall"))),
        ]
    return [
        ("IoU (mean per image)", _fmt(m.get("iou"))),
        ("Dice (mean per image)", _fmt(m.get("dice"))),
        ("IoU (pooled pixels)", _fmt(m.get("iou_pooled"))),
    ]


def _provenance_lines(manifest: dict[str, Any]) -> list[str]:
    prov = manifest.get("label_provenance") or {}
    lines = [
        f"- label source: `{prov.get('label_source')}`"
        + (f" (rule {prov['rule_version']})" if prov.get("rule_version") else ""),
        f"- {prov.get('description', '')}",
    ]
    if prov.get("mask_kind"):
        lines.append(f"- masks: `{prov['mask_kind']}`: {prov.get('mask_description', '')}")
    return lines


def render_model_card(manifest: dict[str, Any]) -> str:
    """README.md of a bundle: what the model is, how it was trained, what it scored, limits."""
    t = manifest.get("training") or {}
    d = manifest.get("dataset") or {}
    w = manifest.get("weights") or {}
    m = manifest.get("metrics") or {}
    init = "ImageNet (local weights file)" if w.get("imagenet") else "random (no pretrained)"
    lines = [
        f"# {manifest.get('display_name') or manifest['key']} (`{manifest['key']}`)",
        "",
        f"> **{RESEARCH_USE_NOTICE}**",
        "",
        f"- task: {manifest['task']}; architecture: `{manifest['architecture']}`; "
        f"version {manifest['version']}",
        f"- parameters: {manifest.get('parameters'):,}" if manifest.get("parameters") else "",
        f"- FLOPs per image (forward): {_human(manifest.get('flops'))}",
        f"- input: {manifest['input']['shape']} float32 in [0, 1] "
        f"({manifest['input']['preprocessing']['name']})",
        f"- weights: {w.get('storage_dtype', '?')} storage; initialisation {init}",
    ]
    if manifest["task"] == "classification":
        lines.append(f"- Grad-CAM layer: `{manifest.get('gradcam_layer')}`")
    if manifest.get("attention_layers"):
        names = ", ".join(f"`{n}`" for n in manifest["attention_layers"])
        lines.append(f"- attention layers (second output = attention weights): {names}")
    lines += ["", "## Labels", "", *_provenance_lines(manifest), ""]
    if manifest["task"] == "classification":
        lines += [
            "A model trained on feature-rule labels measures how well a network learns the "
            "labelling rule from the pixels, not how well it detects ankylosing spondylitis.",
            "",
        ]
    lines += ["## Training", ""]
    if t.get("epochs_run"):
        machine = (t.get("machine") or {}).get("summary", "?")
        lines += [
            f"- config: `{t.get('config_path', '')}`; epochs run: {t.get('epochs_run')}; "
            f"time: {t.get('seconds', 0) / 60:.1f} min on {machine}",
        ]
    else:
        lines.append(f"- {t.get('note', 'not trained')}")
    if d:
        lines.append(
            f"- dataset `{d.get('dir')}` (sha256 {str(d.get('hash'))[:12]}…): "
            f"{d.get('n_fit')} fit / {d.get('n_val')} validation / {d.get('n_test')} test images, "
            f"split by {d.get('split')}"
        )
    lines += ["", "## Results", ""]
    if m:
        lines += [f"On the `{m.get('split', 'test')}` split ({m.get('n')} images):", ""]
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in headline_rows(manifest)]
        lines += ["", "Details: [REPORT.md](REPORT.md)."]
    else:
        lines.append("Not evaluated yet (`spondyscan evaluate`).")
    lines += ["", "## Intended use", "", manifest.get("intended_use", RESEARCH_USE_NOTICE), ""]
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


def render_report(manifest: dict[str, Any]) -> str:
    """REPORT.md: every measured number of the last evaluation, with the plots."""
    m = manifest.get("metrics") or {}
    lines = [
        f"# Evaluation report: {manifest.get('display_name') or manifest['key']}",
        "",
        f"> {RESEARCH_USE_NOTICE}",
        "",
        f"Split `{m.get('split', '?')}` of dataset `{m.get('dataset', '?')}` "
        f"(sha256 {str(m.get('dataset_hash', ''))[:12]}…), {m.get('n', 0)} images, "
        f"evaluated {m.get('evaluated', '?')}.",
        "",
        *_provenance_lines(manifest),
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in headline_rows(manifest)],
        "",
    ]
    if manifest["task"] == "classification" and "binary" in m:
        lines += ["## AS status", "", *_head_table(m["binary"]), ""]
        lines += ["![AS status confusion matrix](plots/confusion_binary.png)", ""]
        lines += ["## Stage", "", *_head_table(m["stage"]), ""]
        lines += ["![stage confusion matrix](plots/confusion_stage.png)", ""]
        if m.get("per_source"):
            lines += ["## Per source", "", "| source | n | AS status acc. | stage acc. |",
                      "|---|---|---|---|"]  # fmt: skip
            for src, r in m["per_source"].items():
                lines.append(
                    f"| {src} | {r['n']} | {_fmt(r['binary_accuracy'], True)} "
                    f"| {_fmt(r['stage_accuracy'], True)} |"
                )
            lines.append("")
    elif manifest["task"] == "segmentation":
        if m.get("per_source"):
            lines += ["## Per source", "", "| source | n | IoU | Dice |", "|---|---|---|---|"]
            for src, r in m["per_source"].items():
                lines.append(f"| {src} | {r['n']} | {_fmt(r['iou'])} | {_fmt(r['dice'])} |")
            lines.append("")
        lines += ["Per-image IoU and Dice: [metrics_per_image.csv](metrics_per_image.csv).", ""]
    t = manifest.get("training") or {}
    if t.get("history"):
        lines += ["## Training curves", "", "![curves](plots/curves.png)", ""]
    return "\n".join(lines) + "\n"
