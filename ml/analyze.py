"""`spondyscan analyze IMAGE|DIR|series.zip|volume.nii.gz`: the full pipeline with local bundles.

One image: segments the lumbosacral region, classifies with one or more classifiers side by
side and explains each with segmentation focus, writing one folder per model and an
``analysis.json`` (offline counterpart of ``POST /analyses``).

A whole series (a folder of DICOM instances, a zip of them, or a NIfTI volume without
``--frame``): every slice segmented into one 3D mask, every slice classified, one answer per
model from the key slices (:mod:`ml.study_run`; offline counterpart of ``POST /studies``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ml.explain.cli import HEADS, explain_file
from ml.fsutil import write_atomic
from ml.vocab import MODEL_AGNOSTIC_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``analyze`` options."""
    parser.add_argument(
        "image",
        help="image file (PNG, JPEG, NPY, DICOM), or a whole series: a folder of DICOM "
        "instances, a zip of them, or a NIfTI volume",
    )
    parser.add_argument(
        "--models", default=None,
        help="comma-separated classifier keys (default: every classification bundle's default)",
    )  # fmt: skip
    parser.add_argument("--seg-model", help="segmentation bundle key (default: the default one)")
    parser.add_argument("--models-dir", default="models", help="folder of model bundles")
    parser.add_argument("--head", choices=[*HEADS], default="binary", help="head to explain")
    parser.add_argument(
        "--method",
        choices=MODEL_AGNOSTIC_METHODS,
        default=None,
        help="heatmap method (default: each model's measured best, from its manifest)",
    )
    parser.add_argument(
        "--frame", type=int, help="one frame / slice of a multi-frame image or volume only"
    )
    parser.add_argument(
        "--key-slices", type=int, default=9, help="series: most key slices classified (9)"
    )
    parser.add_argument("--no-faithfulness", action="store_true", help="skip faithfulness")
    parser.add_argument("--out", required=True, help="output folder")


def default_classifiers(models_dir: str) -> list[str]:
    """The default classification bundle, or every classifier when none is marked default."""
    from ml.bundle import BundleError, discover_bundles, read_manifest

    found: list[tuple[bool, str]] = []
    for path in discover_bundles(models_dir):
        try:
            manifest = read_manifest(path)
        except BundleError:
            continue
        if manifest.task == "classification":
            found.append((manifest.default, path.name))
    defaults = [name for is_default, name in found if is_default]
    return defaults or sorted(name for _, name in found)


def run(args: argparse.Namespace) -> int:
    """Run the pipeline; prints one line per model and the research-use notice."""
    from ml.clierror import CliError
    from ml.study_run import is_series_input

    source = Path(args.image)
    if not source.exists():
        raise CliError(f"{source} does not exist")
    if args.frame is None and is_series_input(source):
        return _run_series(args, source)

    keys = [k for k in (args.models or "").split(",") if k] or default_classifiers(args.models_dir)
    if not keys:
        raise CliError(f"no classification bundle in {args.models_dir}")
    out = Path(args.out)
    results: dict[str, Any] = {}
    for key in keys:
        ns = argparse.Namespace(
            image=args.image, model=key, models_dir=args.models_dir, head=args.head,
            method=args.method, focus="segmentation", seg_model=args.seg_model,
            class_index=None, frame=args.frame, no_faithfulness=args.no_faithfulness,
            out=str(out / key),
        )  # fmt: skip
        results[key] = explain_file(ns)
    first = next(iter(results.values()))
    analysis = {
        "image": first["image"],
        "segmentation_model": first.get("segmentation_model"),
        "models": results,
        "notice": first["notice"],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "analysis.json", (json.dumps(analysis, indent=2) + "\n").encode())
    for key, s in results.items():
        sys.stdout.write(
            f"{key}: {s['head']} = {s['class_name']} (p={s['probability']:.3f}); "
            f"labels: {s.get('label_provenance', {}).get('label_source', 'unknown')}\n"
        )
    sys.stdout.write(f"wrote {out}/analysis.json\n{first['notice']}\n")
    return 0


def _run_series(args: argparse.Namespace, source: Path) -> int:
    from ml.clierror import CliError
    from ml.domain import REFERENCE_FILE, DomainReference
    from ml.explain.cli import _bundle_dir, _default_segmenter, _load
    from ml.io import ImageError
    from ml.study_run import analyze_series, raw_slices, read_series, write_study

    keys = [k for k in (args.models or "").split(",") if k] or default_classifiers(args.models_dir)
    if not keys:
        raise CliError(f"no classification bundle in {args.models_dir}")
    try:
        series, files = read_series(source)
        raw, errors = raw_slices(series, files)
    except ImageError as exc:
        raise CliError(f"{source}: {exc.code}: {exc.message}") from exc
    seg_dir = (
        _bundle_dir(args.seg_model, args.models_dir)
        if args.seg_model
        else _default_segmenter(args.models_dir)
    )
    seg = _load(seg_dir)
    classifiers = [_load(_bundle_dir(k, args.models_dir)) for k in keys]
    reference = Path(args.models_dir) / REFERENCE_FILE
    domain = DomainReference.load(reference) if reference.is_file() else None
    study, volume, display = analyze_series(
        series, raw, seg, classifiers, key_limit=args.key_slices, domain=domain
    )
    study["unreadable_slices"] = errors
    out = Path(args.out)
    write_study(out, series, study, volume, display)
    sys.stdout.write(
        f"{source}: {len(series.slices)} slices ({series.format}); key slices "
        f"{study['key_slices']}; {'in' if study['in_domain'] else 'OUT OF'} the models' domain\n"
    )
    for m in study["models"]:
        sys.stdout.write(
            f"{m['model']}: AS {m['as_status']} ({m['as_probability']:.3f}), stage {m['stage']}; "
            f"P(positive) mean {m['p_positive_mean']:.3f} max {m['p_positive_max']:.3f}, "
            f"agreement {m['status_agreement']:.0%}; "
            f"labels: {m['label_provenance']['label_source']}\n"
        )
    sys.stdout.write(f"wrote {out}/study.json, mask.nii.gz, key_slices.png, probability.png\n")
    sys.stdout.write(f"{study['notice']}\n")
    return 0
