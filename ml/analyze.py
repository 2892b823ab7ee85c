"""`spondyscan analyze IMAGE`: the full pipeline on one image with local bundles.

Segments the lumbosacral region, classifies with one or more classifiers side by side and
explains each with segmentation focus, writing one folder per model and an ``analysis.json``.
Offline counterpart of the API's ``POST /analyses``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ml.explain.cli import HEADS, explain_file
from ml.fsutil import write_atomic
from ml.vocab import GRADCAM_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``analyze`` options."""
    parser.add_argument("image", help="image file (PNG, JPEG, NPY, DICOM, NIfTI)")
    parser.add_argument(
        "--models", default=None,
        help="comma-separated classifier keys (default: every classification bundle's default)",
    )  # fmt: skip
    parser.add_argument("--seg-model", help="segmentation bundle key (default: the default one)")
    parser.add_argument("--models-dir", default="models", help="folder of model bundles")
    parser.add_argument("--head", choices=[*HEADS], default="binary", help="head to explain")
    parser.add_argument("--method", choices=GRADCAM_METHODS, default="gradcam")
    parser.add_argument("--frame", type=int, help="frame of a multi-frame image")
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
