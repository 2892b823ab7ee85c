"""`spondyscan train --config ml/configs/<key>.yaml --dataset DIR [--out models/<key>]`."""

from __future__ import annotations

import argparse


def epoch_caps(text: str) -> int | list[int]:
    """``"8"`` -> 8 (every stage); ``"8,1"`` -> [8, 1] (one cap per schedule stage)."""
    try:
        caps = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,M,... epochs, got {text!r}") from None
    if any(c < 1 for c in caps):
        raise argparse.ArgumentTypeError("epoch caps must be at least 1")
    return caps[0] if len(caps) == 1 else caps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (or a key in ml/configs)")
    parser.add_argument("--dataset", required=True, help="folder written by `spondyscan prepare`")
    parser.add_argument("--out", help="bundle folder (default: <models-dir>/<key>)")
    parser.add_argument("--models-dir", default="models", help="where bundles go (default models)")
    parser.add_argument(
        "--epochs",
        type=epoch_caps,
        help="cap every stage at N epochs (quick runs), or each stage at its own cap: N,M,...",
    )
    parser.add_argument("--run-dir", help="checkpoints and logs (default runs/<key>)")
    parser.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="stop training after the epoch that passes this many seconds (the bundle is "
        "still evaluated and written; the manifest records the limit)",
    )
    parser.add_argument(
        "--init-weights", help="start from this .weights.h5 of the same architecture (continue)"
    )


def run(args: argparse.Namespace) -> int:
    from ml.clierror import CliError
    from ml.training.config import ConfigError

    try:
        from ml.training.loop import train

        result = train(
            args.config,
            args.dataset,
            out_dir=args.out,
            epochs=args.epochs,
            models_dir=args.models_dir,
            run_dir=args.run_dir,
            init_weights=args.init_weights,
            time_limit=args.time_limit,
        )
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    from ml import RESEARCH_USE_NOTICE
    from ml.evaluation.evaluate import summary_line

    m = result.manifest
    epochs = m.training.epochs_run if m.training else 0
    print(f"wrote {result.bundle_dir} ({m.parameters or 0:,} parameters, "
          f"{epochs} epochs, {result.seconds / 60:.1f} min)")  # fmt: skip
    print(f"test: {summary_line(m.metrics, m.task)}")
    for path in result.derived:
        print(f"wrote {path}")
    print(RESEARCH_USE_NOTICE)
    return 0


def run_cv(args: argparse.Namespace) -> int:
    """`spondyscan evaluate --cv K` (routed here by :func:`ml.cli.run_command`)."""
    import datetime as _dt
    import json
    from pathlib import Path

    from ml import RESEARCH_USE_NOTICE
    from ml.clierror import CliError
    from ml.training.config import load_config
    from ml.training.cv import CV_RESULTS, cross_validate, fold_result_name

    if args.model is None or args.dataset is None:
        raise CliError("--cv needs --model (a config key or YAML) and --dataset")
    epochs = None
    if args.epochs:
        caps = [int(e) for e in str(args.epochs).split(",")]
        epochs = caps[0] if len(caps) == 1 else caps

    folds = None
    if args.folds:
        try:
            folds = sorted({int(f) for f in str(args.folds).split(",")})
        except ValueError:
            raise CliError(f"--folds takes fold numbers such as 0,2 (got {args.folds!r})") from None

    def progress(i: int, record: dict) -> None:
        how = "reused from an earlier run" if record["reused"] else f"{record['epochs']} epochs"
        start = record.get("init_from")
        if start:
            how += f", warm-started from {start['bundle']}"
            how += " (reused)" if start["reused"] else ""
        print(f"  fold {i}: {record['subjects']} subjects, {record['n']} slices ({how}): "
              f"{record['metrics']}", flush=True)  # fmt: skip

    key = Path(args.model).stem
    try:
        cfg = load_config(args.model)  # read once: cross_validate takes the dict
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    bundle = Path(args.models_dir) / cfg["key"]
    writes = not args.no_write and (bundle / "manifest.json").is_file()
    results = bundle / CV_RESULTS if writes else None
    try:
        report = cross_validate(
            cfg, args.dataset, Path(args.work_dir) / key, k=args.cv, epochs=epochs,
            resume=args.resume, folds=folds, results_dir=results, progress=progress,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    if report.missing:
        done = [f["fold"] for f in report.folds]
        rest = ",".join(str(i) for i in report.missing)
        print(f"partial: {len(done)} of {report.k} folds have results "
              f"({', '.join(map(str, done)) or 'none'}); nothing is pooled or recorded until "
              f"every fold has one. Continue with --folds {rest} --resume"
              + (f" (results kept in {results})" if results else ""))  # fmt: skip
        print(RESEARCH_USE_NOTICE)
        return 0
    for name, m in report.metrics.items():
        lo, hi = m["ci95"]
        fold_mean = "n/a" if m["fold_mean"] is None else f"{m['fold_mean']:.4f}"
        print(f"{name}: {m['pooled']:.4f} [{lo:.4f}, {hi:.4f}] (fold mean {fold_mean})")
    print(f"{report.k} folds, {report.subjects} subjects, {report.slices} slices, "
          f"{report.seconds:.0f} s of training; {report.note}")  # fmt: skip
    for source, values in report.by_source.items():
        shown = ", ".join(f"{m} {values[m]:.4f}" for m in values if m not in ("subjects", "n"))
        print(f"  {source}: {shown} ({values['subjects']} subjects, {values['n']} slices)")
    if writes:
        from ml.bundle import refresh_model_card, update_manifest
        from ml.manifest import CrossValidation

        assert results is not None
        for stale in results.glob("fold*.json"):  # left by an earlier run with more folds
            if stale.name not in {fold_result_name(i) for i in range(report.k)}:
                stale.unlink()
        record = CrossValidation(
            **{k: v for k, v in report.as_dict().items() if k not in ("key", "task")},
            epochs_cap=epochs, evaluated=str(_dt.date.today()), fold_results=f"{CV_RESULTS}/",
        )  # fmt: skip
        update_manifest(bundle, {"cross_validation": record.model_dump(mode="json")})
        refresh_model_card(bundle)
        print(f"recorded in {bundle / 'manifest.json'} (cross_validation) and its model card")
    print(RESEARCH_USE_NOTICE)
    return 0
