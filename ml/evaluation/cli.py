"""`spondyscan evaluate --model KEY|PATH --dataset DIR [--split test]`, or in volume mode
`spondyscan evaluate --model KEY|PATH --volumes DIR [--json OUT]` (3D Dice, IoU, HD95 of a
segmenter on whole series against their mask.nii.gz, per case and per source)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="bundle key (under --models-dir) or path")
    parser.add_argument("--dataset", help="folder written by `spondyscan prepare`")
    parser.add_argument(
        "--volumes",
        help="volume mode: case folders (volume.nii.gz or dicom/, mask.nii.gz, case.json)",
    )
    parser.add_argument("--json", help="volume mode: also write the metrics to this JSON file")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--models-dir", default="models")
    parser.add_argument(
        "--no-write", action="store_true", help="print the metrics, leave the bundle unchanged"
    )


def run(args: argparse.Namespace) -> int:
    from ml import RESEARCH_USE_NOTICE
    from ml.bundle import BundleError, read_manifest
    from ml.clierror import CliError
    from ml.evaluation.evaluate import evaluate_bundle, resolve_model, summary_line

    if (args.dataset is None) == (args.volumes is None):
        raise CliError("give either --dataset (slices) or --volumes (whole series)")
    try:
        path = resolve_model(args.model, args.models_dir)
    except FileNotFoundError as exc:
        raise CliError(
            f"no bundle {args.model!r}: not a folder with manifest.json, nor a key under "
            f"{args.models_dir}"
        ) from exc
    if args.volumes is not None:
        return _volumes(path, args)
    try:
        task = read_manifest(path).task
        block = evaluate_bundle(
            path, args.dataset, split=args.split, models_dir=args.models_dir,
            write=not args.no_write,
        )  # fmt: skip
    except (BundleError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(f"{path} on {args.split} ({block['n']} images): {summary_line(block, task)}")
    if task == "segmentation" and block.get("per_source"):
        for src, r in block["per_source"].items():
            print(f"  {src}: n={r['n']} IoU {r['iou']} Dice {r['dice']}")
    if not args.no_write:
        print(f"updated {path / 'manifest.json'} and {path / 'REPORT.md'}")
    print(RESEARCH_USE_NOTICE)
    return 0


def _volumes(path: object, args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ml import RESEARCH_USE_NOTICE
    from ml.bundle import BundleError, load_bundle, read_manifest
    from ml.clierror import CliError
    from ml.evaluation.volume import evaluate_volumes, find_cases

    root = Path(args.volumes)
    if not root.is_dir():
        raise CliError(f"{root} is not a folder")
    cases = find_cases(root)
    if not cases:
        raise CliError(f"no case folder with mask.nii.gz under {root}")
    try:
        manifest = read_manifest(path)  # type: ignore[arg-type]
        if manifest.task != "segmentation":
            raise CliError(f"{path} is a {manifest.task} model; volume mode needs a segmenter")
        bundle = load_bundle(path)  # type: ignore[arg-type]
        report = evaluate_volumes(
            bundle.model, cases, threshold=manifest.mask_threshold, size=manifest.input.size
        )
    except (BundleError, ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    print(f"{path} on {report['cases']} volumes: Dice {report['dice']} IoU {report['iou']}")
    for name, c in report["per_case"].items():
        print(
            f"  {name} ({c['source']}, {c.get('structure') or '?'}): Dice {c['dice']} "
            f"IoU {c['iou']} HD95 {c['hd95_mm']} mm{'  [' + c['note'] + ']' if 'note' in c else ''}"
        )
    for source, r in report["per_source"].items():
        print(
            f"  source {source}: n={r['cases']} Dice {r['dice']} IoU {r['iou']} HD95 {r['hd95_mm']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    print(RESEARCH_USE_NOTICE)
    return 0
