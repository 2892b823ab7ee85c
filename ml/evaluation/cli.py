"""`spondyscan evaluate --model KEY|PATH --dataset DIR [--split test]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="bundle key (under --models-dir) or path")
    parser.add_argument("--dataset", required=True, help="folder written by `spondyscan prepare`")
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

    try:
        path = resolve_model(args.model, args.models_dir)
    except FileNotFoundError as exc:
        raise CliError(
            f"no bundle {args.model!r}: not a folder with manifest.json, nor a key under "
            f"{args.models_dir}"
        ) from exc
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
