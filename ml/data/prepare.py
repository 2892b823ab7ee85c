"""`spondyscan prepare`: raw sources -> a labelled, subject-disjoint dataset folder.

Steps: list the source's slices (an adapter), decode and preprocess each one (the shared
``ml.preprocessing.preprocess``), make its target mask and lumbosacral box (``ml.roi``), compute
the rule features, split by subject (stratified on AS status and source), fit the label rule on
the training split only, and write ``images/``, ``masks/``, ``annotations/dataset.csv``,
``label_rule.json`` and ``dataset_info.txt`` into a temporary folder that is renamed into place
at the end, so an interrupted run leaves nothing half-made.

Masks, one target structure at a time (``--structure``, vertebral bodies by default):

- ``expert``: the source's own mask when it shows the target structure (all its labels -> 1);
- ``roi``: otherwise, shapes approximated from the disc level points
  (:func:`ml.roi.structure_mask_from_points`); a disc mask is never used as a vertebral-body
  mask or the other way round, so the binary task never mixes structures;
- ``none``: a plain-folder image with neither a mask nor points (blank mask, full-image box).

The box (``bbox_*``) comes from the level points when the slice has them, else from the lowest
structures of its mask (:mod:`ml.roi`).

Labels: the feature rule (``ml.data.labels``) unless a labels CSV is given (``clinical``).
Because the split is stratified on AS status but the rule may only be fitted on the training
split, the split uses provisional labels from the rule fitted on all images; the final labels
come from the rule refitted on the training split.

Layout: this module runs the steps and the command; one slice is processed in
:mod:`ml.data.prepare_slices`, labels and split are made in :mod:`ml.data.prepare_labels`, and
dataset.csv, dataset_info.txt and the summary are written by :mod:`ml.data.prepare_report`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.clierror import CliError
from ml.data import adapters
from ml.data.labels import image_features, label_source_name
from ml.data.prepare_labels import label_and_split, source_rates
from ml.data.prepare_report import (
    CITATIONS,
    COLUMNS,
    EXTRA_COLUMNS,
    MASK_KINDS,
    csv_bytes,
    distribution_tables,
    info_text,
    rate_table,
    summary_text,
)
from ml.data.prepare_slices import SIZE, Row, SkipSlice, process_item, write_png

__all__ = [
    "CITATIONS",
    "COLUMNS",
    "EXTRA_COLUMNS",
    "MASK_KINDS",
    "SIZE",
    "SOURCE_KINDS",
    "PrepareResult",
    "Row",
    "add_arguments",
    "main",
    "prepare_dataset",
    "process_item",
    "run",
    "scan_source",
]

log = logging.getLogger(__name__)

SOURCE_KINDS = ("lumbar-mri", "kaggle", "folder")

# Kept under its old name because callers (the tests among them) catch prepare._Skip.
_Skip = SkipSlice


@dataclass
class PrepareResult:
    """What ``prepare_dataset`` wrote and the numbers it printed."""

    out_dir: Path
    n_images: int
    n_subjects: int
    split_counts: dict[str, int]
    label_source: str
    summary: str
    rates: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# ------------------------------------------------------------------------------- folder swap


def _check_options(rule: str, structure: str, test_fraction: float) -> None:
    if rule not in ("v1", "v2"):
        raise CliError(f"unknown rule {rule!r}; expected v1 or v2")
    if structure not in adapters.STRUCTURES:
        raise CliError(f"unknown structure {structure!r}; expected vertebral_body or disc")
    if not 0.0 < test_fraction < 1.0:
        raise CliError(f"--test-fraction must be between 0 and 1, got {test_fraction}")


def _check_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise CliError(f"output path exists and is not a folder: {out}")
        is_dataset = (out / "annotations" / "dataset.csv").is_file()
        if any(out.iterdir()) and not is_dataset:
            raise CliError(f"refusing to replace {out}: it is not empty and not a dataset folder")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Swap the finished temporary folder in; an old dataset there is removed after the swap."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------- pipeline


def scan_source(
    kind: str,
    path: Path,
    *,
    include_ct: bool = False,
    labels_csv: str | Path | None = None,
) -> adapters.Scan:
    """Run the adapter for ``kind`` (and join a labels CSV when given)."""
    if kind == "lumbar-mri":
        scan = adapters.scan_lumbar_mri(path, include_ct=include_ct)
    elif kind == "kaggle":
        scan = adapters.scan_kaggle(path, include_ct=include_ct)
    elif kind == "folder":
        scan = adapters.scan_folder(path)
    else:
        raise CliError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    if labels_csv is not None:
        scan = adapters.attach_labels(scan, adapters.read_labels_csv(labels_csv))
    if not scan.items:
        detail = (
            f" ({len(scan.skipped)} files skipped, e.g. {scan.skipped[0][1]})"
            if scan.skipped
            else ""
        )
        raise CliError(f"no usable images in {path}{detail}")
    return scan


def _write_slices(
    tmp: Path,
    items: list[adapters.Item],
    structure: str,
    include_ct: bool,
    skipped: list[tuple[str, str]],
    progress: bool,
) -> list[Row]:
    """Process every item into ``images/`` and ``masks/``; unusable ones go to ``skipped``."""
    from tqdm import tqdm

    from ml.io import ImageError

    rows: list[Row] = []
    bar = tqdm(items, desc="prepare", unit="slice", file=sys.stderr, disable=not progress)
    for item in bar:
        try:
            # Called through this module's global so that patching prepare.process_item works.
            image, mask, info = process_item(item, structure, include_ct)
        except ImageError as exc:
            skipped.append((item.source_path, f"{exc.code}: {exc.message}"))
            continue
        except SkipSlice as exc:
            skipped.append((item.source_path, str(exc)))
            continue
        idx = len(rows)
        write_png(tmp / "images" / f"img_{idx:04d}.png", image)
        write_png(tmp / "masks" / f"mask_{idx:04d}.png", mask)
        rows.append(
            Row(idx, item, info["mask_kind"], info["bbox"], info["n_points"],
                image_features(image), structure)
        )  # fmt: skip
    bar.close()
    return rows


@dataclass(frozen=True)
class _Options:
    """The options of one ``prepare_dataset`` run that the steps below need."""

    source_kind: str
    rule: str
    normalization: str
    image_level_split: bool
    include_ct: bool
    structure: str
    seed: int
    test_fraction: float
    labels_csv: str | Path | None
    progress: bool


@dataclass
class _Written:
    """What the temporary folder holds, and the tables the summary repeats."""

    rows: list[Row]
    label_source: str
    clinical: bool
    rates: dict[str, dict[str, Any]]
    tables: str
    rate_table: str


def prepare_dataset(
    source_kind: str,
    source_path: str | Path,
    out_dir: str | Path,
    *,
    labels_csv: str | Path | None = None,
    rule: str = "v2",
    global_thresholds: bool = False,
    image_level_split: bool = False,
    include_ct: bool = False,
    structure: str = "vertebral_body",
    seed: int = 42,
    test_fraction: float = 0.2,
    progress: bool = False,
) -> PrepareResult:
    """Build a dataset folder from one source (the library form of ``spondyscan prepare``).

    Args:
        source_kind: ``"lumbar-mri"``, ``"kaggle"`` or ``"folder"``.
        source_path: the source folder.
        out_dir: dataset folder to write; replaced only if it already holds a dataset.
        labels_csv: optional CSV of clinical labels (``filename,AS_status,stage``).
        rule: feature rule version, ``"v1"`` or ``"v2"``.
        global_thresholds: normalise features over all sources (the design's version) instead
            of within each source.
        image_level_split: split by image instead of by subject (for comparison only: leaks).
        include_ct: keep CT sources (Kaggle ``tseg``).
        structure: target structure of the masks, ``"vertebral_body"`` or ``"disc"``.
        seed: split seed.
        test_fraction: share of subjects (or images) in the test split.
        progress: show a progress bar on stderr.

    Returns:
        A :class:`PrepareResult` with the numbers and the printed summary.

    Raises:
        CliError: missing folder, empty source, bad CSV columns, bad options.
    """
    _check_options(rule, structure, test_fraction)
    opts = _Options(
        source_kind=source_kind, rule=rule,
        normalization="global" if global_thresholds else "per_source",
        image_level_split=image_level_split, include_ct=include_ct, structure=structure,
        seed=seed, test_fraction=test_fraction, labels_csv=labels_csv, progress=progress,
    )  # fmt: skip
    src = Path(source_path)
    out = Path(out_dir)
    _check_out(out)
    scan = scan_source(source_kind, src, include_ct=include_ct, labels_csv=labels_csv)
    skipped = list(scan.skipped)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        written = _write_dataset(tmp, src, scan, skipped, opts)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _result(written, out, skipped, opts)


def _write_dataset(
    tmp: Path,
    src: Path,
    scan: adapters.Scan,
    skipped: list[tuple[str, str]],
    opts: _Options,
) -> _Written:
    """Write the whole dataset into ``tmp``: images, masks, labels, rule and dataset_info."""
    items = sorted(scan.items, key=lambda it: (it.source, it.subject_id, it.source_path))
    for sub in ("images", "masks", "annotations"):
        (tmp / sub).mkdir()
    rows = _write_slices(tmp, items, opts.structure, opts.include_ct, skipped, opts.progress)
    if not rows:
        raise CliError(
            f"no usable images in {src}: all {len(items)} candidates were skipped "
            f"(e.g. {skipped[-1][1] if skipped else 'unknown'})"
        )
    clinical = all(r.item.label is not None for r in rows) and opts.labels_csv is not None
    label_source = "clinical" if clinical else label_source_name(opts.rule)
    fitted, train_idx = label_and_split(
        rows, clinical=clinical, rule=opts.rule, normalization=opts.normalization,
        image_level_split=opts.image_level_split, test_fraction=opts.test_fraction,
        seed=opts.seed,
    )  # fmt: skip
    fitted.save(tmp / "label_rule.json")
    data = csv_bytes(rows, label_source)
    (tmp / "annotations" / "dataset.csv").write_bytes(data)
    rates = source_rates(rows, train_idx, opts.rule)
    tables = distribution_tables(rows, label_source, "" if clinical else opts.normalization)
    rates_text = rate_table(rates, clinical)
    text = info_text(
        source_kind=opts.source_kind, src=src, rows=rows, label_source=label_source,
        normalization=opts.normalization, fitted=fitted, tables=tables, rate_table=rates_text,
        skipped=skipped, notes=scan.notes, image_level_split=opts.image_level_split,
        seed=opts.seed, test_fraction=opts.test_fraction, structure=opts.structure,
        csv_hash=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip
    (tmp / "dataset_info.txt").write_text(text, encoding="utf-8")
    return _Written(rows, label_source, clinical, rates, tables, rates_text)


def _result(
    written: _Written, out: Path, skipped: list[tuple[str, str]], opts: _Options
) -> PrepareResult:
    rows = written.rows
    split_counts = dict(Counter(r.split for r in rows))
    n_subjects = len({r.item.subject_id for r in rows})
    summary = summary_text(
        rows=rows, n_subjects=n_subjects, split_counts=split_counts, out=out,
        image_level_split=opts.image_level_split, tables=written.tables,
        rate_table=written.rate_table, skipped=skipped, label_source=written.label_source,
        clinical=written.clinical,
    )  # fmt: skip
    return PrepareResult(
        out_dir=out,
        n_images=len(rows),
        n_subjects=n_subjects,
        split_counts=split_counts,
        label_source=written.label_source,
        summary=summary,
        rates=written.rates,
        skipped=skipped,
    )


# ---------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``prepare`` options."""
    parser.add_argument(
        "--source", nargs=2, metavar=("KIND", "PATH"), required=True,
        help="source kind (lumbar-mri | kaggle | folder) and its folder",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="dataset folder to write")
    parser.add_argument(
        "--labels-csv", help="clinical labels: filename,AS_status,stage[,subject_id]"
    )
    parser.add_argument("--rule", choices=["v1", "v2"], default="v2", help="feature rule version")
    parser.add_argument(
        "--global-thresholds", action="store_true",
        help="normalise rule features over all sources (the design's version; follows the scanner)",
    )  # fmt: skip
    parser.add_argument(
        "--image-level-split", action="store_true",
        help="split by image instead of by subject (leaks; for comparison only)",
    )  # fmt: skip
    parser.add_argument("--include-ct", action="store_true", help="keep CT sources (Kaggle tseg)")
    parser.add_argument(
        "--structure", choices=list(adapters.STRUCTURES), default="vertebral_body",
        help="target structure of the masks",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=42, help="split seed")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of subjects in test"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``spondyscan prepare``; prints the distributions, returns the exit status."""
    kind, path = args.source
    if kind not in SOURCE_KINDS:
        raise CliError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    result = prepare_dataset(
        kind,
        path,
        args.out,
        labels_csv=args.labels_csv,
        rule=args.rule,
        global_thresholds=args.global_thresholds,
        image_level_split=args.image_level_split,
        include_ct=args.include_ct,
        structure=args.structure,
        seed=args.seed,
        test_fraction=args.test_fraction,
        progress=True,
    )
    sys.stdout.write(result.summary + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ml.data.prepare``: the command without the rest of the CLI."""
    from ml.cli import configure_logging

    parser = argparse.ArgumentParser(prog="spondyscan prepare", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(False)
    try:
        return run(args)
    except CliError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
