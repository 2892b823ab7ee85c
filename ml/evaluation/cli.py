"""`spondyscan evaluate --model KEY|PATH --dataset DIR [--split test]`, or in volume mode
`spondyscan evaluate --model KEY|PATH --volumes DIR [--json OUT]` (3D Dice, IoU, HD95 of a
segmenter on whole series against their mask.nii.gz, per case and per source), or the
faithfulness benchmark `spondyscan evaluate --faithfulness --dataset DIR [--model K1,K2]
[--json OUT]` (every classifier x every explanation method; each manifest records the table and
its best method as the default; see ml.evaluation.faithfulness_bench), calibration
`spondyscan evaluate --calibrate --dataset DIR [--model K1,K2]` (temperature scaling, see
ml.evaluation.calibrate), or per-level Dice `spondyscan evaluate --levels --model KEY --dataset DIR
[--lumbar-mri DIR]` (see ml.evaluation.levels_eval)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="bundle key (under --models-dir) or path; with --faithfulness: comma-separated "
        "keys (default: every classifier)",
    )
    parser.add_argument("--dataset", help="folder written by `spondyscan prepare`")
    parser.add_argument(
        "--volumes",
        help="volume mode: case folders (volume.nii.gz or dicom/, mask.nii.gz, case.json)",
    )
    parser.add_argument(
        "--json",
        help="volume mode / --faithfulness: also write the results to this JSON file",
    )
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--models-dir", default="models")
    parser.add_argument(
        "--no-write", action="store_true", help="print the metrics, leave the bundle unchanged"
    )
    bench = parser.add_argument_group("faithfulness benchmark (--faithfulness)")
    bench.add_argument(
        "--faithfulness",
        action="store_true",
        help="measure every explanation method of each classifier (deletion/insertion) and "
        "record the best one as its default",
    )
    bench.add_argument("--slices", type=int, default=None, help="benchmark slices (default 16)")
    bench.add_argument("--steps", type=int, default=None, help="deletion/insertion steps (8)")
    bench.add_argument("--n-random", type=int, default=None, help="random orders (1)")
    bench.add_argument("--markdown", help="also write the table as Markdown to this file")
    cal = parser.add_argument_group("calibration (--calibrate) and levels (--levels)")
    cal.add_argument(
        "--calibrate",
        action="store_true",
        help="fit each classifier's temperatures on its validation subjects, measure ECE on "
        "the test split, record them in the manifest (serving applies them)",
    )
    cal.add_argument(
        "--levels",
        action="store_true",
        help="per-level Dice (L1-L5) of a segmenter whose bodies are named from the column",
    )
    cal.add_argument(
        "--cv",
        type=int,
        metavar="K",
        help="K-fold cross-validation of --model's config (subject-grouped, source-stratified): "
        "retrains it K times; records pooled metrics with subject-bootstrap 95%% intervals",
    )
    cal.add_argument("--epochs", help="with --cv: cap each stage's epochs (N, or N,M per stage)")
    cal.add_argument("--work-dir", default="runs/cv", help="with --cv: folds, runs and bundles")
    cal.add_argument(
        "--resume",
        action="store_true",
        help="with --cv: reuse each fold's result (in --work-dir or the bundle's "
        "cross_validation/ folder) or bundle left by an earlier run, when it shows the same "
        "config, epoch cap and fold",
    )
    cal.add_argument(
        "--folds",
        help="with --cv: train only these folds (e.g. 0,1); the others come from earlier "
        "results with --resume, and nothing is pooled until every fold has one",
    )
    cal.add_argument(
        "--lumbar-mri",
        default="../shared/data/lumbar_mri",
        help="with --levels: the Kaggle-layout folder whose slices.csv names each mask's levels",
    )


def run(args: argparse.Namespace) -> int:
    from ml import RESEARCH_USE_NOTICE
    from ml.bundle import BundleError, read_manifest
    from ml.clierror import CliError
    from ml.evaluation.evaluate import evaluate_bundle, resolve_model, summary_line

    if args.faithfulness:
        return _faithfulness(args)
    if args.calibrate:
        return _calibrate(args)
    if args.levels:
        return _levels(args)
    if args.model is None:
        raise CliError("give --model (a bundle key or path)")
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


def _faithfulness(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from ml import RESEARCH_USE_NOTICE
    from ml.bundle import BundleError, read_manifest
    from ml.clierror import CliError
    from ml.evaluation import faithfulness_bench as fb
    from ml.fsutil import write_atomic
    from ml.manifest import MethodFaithfulness

    if args.dataset is None:
        raise CliError("--faithfulness needs --dataset (a folder written by spondyscan prepare)")
    keys = [k.strip() for k in (args.model or "").split(",") if k.strip()]
    try:
        paths = fb.classifier_bundles(args.models_dir, keys or None)
        for path in paths:
            if read_manifest(path).task != "classification":
                raise CliError(f"{path} is not a classifier; the benchmark explains classifiers")
    except FileNotFoundError as exc:
        raise CliError(f"no bundle {exc.filename!r} under {args.models_dir}") from exc
    except BundleError as exc:
        raise CliError(str(exc)) from exc
    if not paths:
        raise CliError(f"no classifier bundle under {args.models_dir}")
    t0 = time.perf_counter()

    def progress(key: str, method: str, r: MethodFaithfulness) -> None:
        print(
            f"  [{time.perf_counter() - t0:6.0f}s] {key} {method}: score {r.score:.3f} "
            f"{list(r.score_ci)} deletion {r.deletion_auc:.3f} insertion "
            f"{r.insertion_auc:.3f} empty {r.empty_fraction:.0%}",
            flush=True,
        )

    options = {
        name: value
        for name, value in (
            ("n_slices", args.slices), ("steps", args.steps), ("n_random", args.n_random)
        )
        if value is not None
    }  # fmt: skip
    try:
        table = fb.run_benchmark(
            paths, args.dataset, split=args.split, write=not args.no_write, progress=progress,
            **options,
        )  # fmt: skip
    except (BundleError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    markdown = fb.markdown_table(table.models)
    print(markdown)
    print(
        f"{len(table.slices)} {table.split} slices ({len({s.subject_id for s in table.slices})} "
        f"subjects), steps {table.steps}, {table.n_random} random order(s): {table.seconds:.0f} s"
    )
    for key, record in table.models.items():
        print(f"  {key}: default method {record.default_method}")
    if args.json:
        write_atomic(Path(args.json), (table.model_dump_json(indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    if args.markdown:
        write_atomic(Path(args.markdown), markdown.encode())
        print(f"wrote {args.markdown}")
    if not args.no_write:
        print("recorded in each bundle's manifest.json (explanation) and README.md")
    print(RESEARCH_USE_NOTICE)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from ml import RESEARCH_USE_NOTICE
    from ml.bundle import BundleError
    from ml.clierror import CliError
    from ml.evaluation import calibrate as cal
    from ml.evaluation.faithfulness_bench import classifier_bundles

    if args.dataset is None:
        raise CliError("--calibrate needs --dataset (a folder written by spondyscan prepare)")
    keys = [k.strip() for k in (args.model or "").split(",") if k.strip()]
    try:
        paths = classifier_bundles(args.models_dir, keys or None)
    except FileNotFoundError as exc:
        raise CliError(f"no bundle {exc.filename!r} under {args.models_dir}") from exc
    rows = []
    for path in paths:
        try:
            run = cal.calibrate_bundle(path, args.dataset, write=not args.no_write)
        except (BundleError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        rows.append(cal.summary(path.name, run.record))
        b, s = run.record.binary, run.record.stage
        print(
            f"{path.name}: T status {b.temperature:.2f} (ECE {b.ece_before:.3f} -> "
            f"{b.ece_after:.3f}), T stage {s.temperature:.2f} (ECE {s.ece_before:.3f} -> "
            f"{s.ece_after:.3f}); fitted on {run.record.fitted_on}",
            flush=True,
        )
    print(cal.markdown_table(rows))
    if not args.no_write:
        print("recorded in each manifest.json (calibration) and plots/reliability_*.png")
    print(RESEARCH_USE_NOTICE)
    return 0


def _levels(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ml import RESEARCH_USE_NOTICE
    from ml.clierror import CliError
    from ml.evaluation.evaluate import resolve_model
    from ml.evaluation.levels_eval import evaluate_levels, markdown_table

    if args.model is None or args.dataset is None:
        raise CliError("--levels needs --model (a segmenter) and --dataset")
    if not (Path(args.lumbar_mri) / "slices.csv").is_file():
        raise CliError(f"--lumbar-mri {args.lumbar_mri}: no slices.csv with level names there")
    try:
        path = resolve_model(args.model, args.models_dir)
        report = evaluate_levels(path, args.dataset, args.lumbar_mri)
    except FileNotFoundError as exc:
        raise CliError(f"no bundle {args.model!r} under {args.models_dir}") from exc
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if not args.no_write:
        import datetime as _dt

        from ml.bundle import update_manifest
        from ml.manifest import LevelsRecord

        record = LevelsRecord(**report.as_dict_for_manifest(), evaluated=str(_dt.date.today()))
        update_manifest(path, {"levels": record.model_dump(mode="json")})
        print(f"recorded in {path / 'manifest.json'} (levels)")
    print(markdown_table(report))
    print(
        f"{report.slices} test slices of {report.subjects} subjects with known levels "
        f"({', '.join(f'{k} {v}' for k, v in sorted(report.sources.items()))})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    print(RESEARCH_USE_NOTICE)
    return 0
