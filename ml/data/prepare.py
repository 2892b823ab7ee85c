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
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml import RESEARCH_USE_NOTICE
from ml.clierror import CliError
from ml.data import adapters
from ml.data.labels import (
    AS_STATUS_NAMES,
    PROVENANCE,
    STAGE_NAMES,
    LabelRule,
    fit_rule,
    image_features,
    label_source_name,
)
from ml.data.splits import stratified_split, subject_strata

log = logging.getLogger(__name__)

SIZE = 256
SOURCE_KINDS = ("lumbar-mri", "kaggle", "folder")
COLUMNS = [
    "image_id", "image_path", "mask_path", "AS_status", "stage", "stage_name",
    "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2",
    "subject_id", "source", "split", "label_source", "source_path", "mask_kind",
]  # fmt: skip
EXTRA_COLUMNS = [
    "structure", "n_points", "feat_mean", "feat_lower_mean", "feat_std", "feat_edge_density",
    "rule_score",
]  # fmt: skip
MASK_KINDS = ("expert", "roi", "none")

# From ../shared/data/README.md: cite every source the dataset was built from.
CITATIONS = {
    "myosegmentum": "Burian et al., BMC Musculoskelet Disord 2019, doi:10.1186/s12891-019-2528-x",
    "zukic": "Zukić et al., Comput Graph Forum 2014, doi:10.1111/cgf.12343",
    "chu": "Chu et al., PLoS ONE 2015, doi:10.1371/journal.pone.0143327",
    "menezesreis": "Menezes-Reis et al., Quant Imaging Med Surg 2016, doi:10.21037/qims.2016.08.01",
    "spider": "SPIDER lumbar spine MRI (van der Graaf et al., Sci Data 2024), via the Kaggle "
    "Lumbar Coordinate Pretraining Dataset",
    "lsd": "Lumbar Spine Dataset (Sudirman et al.), via the Kaggle Lumbar Coordinate "
    "Pretraining Dataset",
    "osf": "OSF lumbar MRI, via the Kaggle Lumbar Coordinate Pretraining Dataset",
    "tseg": "TotalSegmentator CT (Wasserthal et al., Radiol Artif Intell 2023), via the Kaggle "
    "Lumbar Coordinate Pretraining Dataset",
}


@dataclass
class Row:
    """One processed slice on its way to dataset.csv."""

    index: int
    item: adapters.Item
    mask_kind: str
    bbox: tuple[int, int, int, int]
    n_points: int
    features: dict[str, float]
    structure: str
    as_status: int = 0
    stage: int = 0
    split: str = "train"
    score: float = 0.0


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


class _Skip(Exception):
    """A slice that cannot be used (reason in the message)."""


# ---------------------------------------------------------------------------------- per slice


def _read_label_mask(path: Path) -> np.ndarray:
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise _Skip(f"mask {path.name} could not be read")
    if m.ndim == 3:
        m = m[..., 0]
    if m.shape != (SIZE, SIZE):
        m = cv2.resize(m, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
    return m


def process_item(
    item: adapters.Item, target: str, include_ct: bool = False
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode one slice and make its model input, target mask and box.

    Returns:
        (image uint8 (256, 256), mask uint8 {0, 255}, info dict with mask_kind, bbox, n_points).

    Raises:
        ImageError: the file is not a readable image.
        _Skip: no usable mask or a blank slice.
    """
    from ml.io import read_image, require_content
    from ml.preprocessing import preprocess
    from ml.roi import (
        bbox_from_mask,
        bbox_from_points,
        structure_mask_from_points,
    )

    loaded = read_image(item.image_path, frame=item.frame)
    if str(loaded.meta.get("modality", "")).upper() == "CT" and not include_ct:
        raise _Skip("CT image (DICOM modality CT) excluded; pass --include-ct to keep it")
    require_content(loaded.pixels)
    unit = preprocess(loaded.pixels, SIZE)
    image = np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)
    points = {k: (x * SIZE, y * SIZE) for k, (x, y) in item.points.items()}
    expert = _read_label_mask(item.mask_path) if item.mask_path is not None else None
    expert_structure = item.structure or target
    info: dict[str, Any] = {"n_points": len(points)}
    if expert is not None and expert_structure == target and np.any(expert > 0):
        mask01 = (expert > 0).astype(np.uint8)
        info["mask_kind"] = "expert"
    elif len(points) >= 2:
        mask01 = structure_mask_from_points(points, (SIZE, SIZE), target)
        info["mask_kind"] = "roi"
    elif expert is not None and expert_structure != target:
        raise _Skip(
            f"its expert mask shows {expert_structure}, the target is {target}, and it has no "
            "level points to draw a region-of-interest mask"
        )
    else:
        mask01 = np.zeros((SIZE, SIZE), np.uint8)
        info["mask_kind"] = "none"
    bbox = None
    if points:
        bbox = bbox_from_points(points, (SIZE, SIZE))
    elif expert is not None:
        bbox = bbox_from_mask(expert)
    if bbox is None:
        bbox = (0, 0, SIZE, SIZE)
    info["bbox"] = tuple(int(v) for v in bbox)
    return image, (mask01 * 255).astype(np.uint8), info


# ------------------------------------------------------------------------------------ helpers


def _fmt(v: float) -> str:
    return f"{v:.6f}"


def _pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:5.1f} %" if n else "    - "


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title]
    for j, r in enumerate(cells):
        lines.append(
            "  " + "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                             for i, c in enumerate(r))
        )  # fmt: skip
        if j == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _distribution_tables(rows: list[Row], label_source: str, normalization: str) -> str:
    splits = ["train", "test"]
    by = {s: [r for r in rows if r.split == s] for s in splits}
    status_rows = []
    for k, name in enumerate(AS_STATUS_NAMES):
        counts = [sum(r.as_status == k for r in by[s]) for s in splits]
        status_rows.append([name, *counts, sum(counts), _pct(sum(counts), len(rows))])
    status_rows.append(["total", *(len(by[s]) for s in splits), len(rows), ""])
    stage_rows = []
    for k, name in enumerate(STAGE_NAMES):
        counts = [sum(r.stage == k for r in by[s]) for s in splits]
        stage_rows.append([f"{k} {name}", *counts, sum(counts), _pct(sum(counts), len(rows))])
    how = f"{label_source}" + (f", {normalization} normalisation" if normalization else "")
    return "\n\n".join(
        [
            _table(f"AS status ({how})", ["AS status", *splits, "total", "share"], status_rows),
            _table(f"Stage ({how})", ["stage", *splits, "total", "share"], stage_rows),
        ]
    )


def _rate_table(rates: dict[str, dict[str, Any]], clinical: bool) -> str:
    header = ["source", "slices", "subjects", "AS+ per-source", "AS+ global"]
    if clinical:
        header.append("AS+ clinical")
    body = []
    for src, r in sorted(rates.items()):
        line = [
            src,
            r["n"],
            r["subjects"],
            _pct(r["per_source"], r["n"]),
            _pct(r["global"], r["n"]),
        ]
        if clinical:
            line.append(_pct(r["clinical"], r["n"]))
        body.append(line)
    return _table(
        "AS+ rate per source (rule fitted on the training split; per-source normalisation is the "
        "default, global is the design's version and follows the scanner)",
        header,
        body,
    )


def _stage_by_source(rows: list[Row]) -> str:
    srcs = sorted({r.item.source for r in rows})
    body = []
    for s in srcs:
        rs = [r for r in rows if r.item.source == s]
        body.append([s, *(sum(r.stage == k for r in rs) for k in range(4)), len(rs)])
    return _table("Stage per source", ["source", *STAGE_NAMES, "total"], body)


def _csv_bytes(rows: list[Row], label_source: str) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS + EXTRA_COLUMNS)
    for r in rows:
        x1, y1, x2, y2 = r.bbox
        w.writerow(
            [
                f"img_{r.index:04d}", f"images/img_{r.index:04d}.png",
                f"masks/mask_{r.index:04d}.png", r.as_status, r.stage, STAGE_NAMES[r.stage],
                x1, y1, x2, y2, r.item.subject_id, r.item.source, r.split, label_source,
                r.item.source_path, r.mask_kind,
                r.structure, r.n_points, _fmt(r.features["mean"]), _fmt(r.features["lower_mean"]),
                _fmt(r.features["std"]), _fmt(r.features["edge_density"]), _fmt(r.score),
            ]
        )  # fmt: skip
    return buf.getvalue().encode("utf-8")


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path.name}")
    path.write_bytes(buf.tobytes())


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


def _skip_summary(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return "Skipped: none"
    by_reason: dict[str, list[str]] = defaultdict(list)
    for path, reason in skipped:
        by_reason[reason].append(path)
    lines = [f"Skipped: {len(skipped)} files"]
    for reason, paths in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        more = f", ... (+{len(paths) - 3})" if len(paths) > 3 else ""
        lines.append(f"  {len(paths):5d}  {reason}  [{', '.join(paths[:3])}{more}]")
    return "\n".join(lines)


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


def _rates(rows: list[Row], train_idx: list[int], version: str) -> dict[str, dict[str, Any]]:
    """AS+ counts per source under both normalisations (rules fitted on the training rows)."""
    feats = [r.features for r in rows]
    srcs = [r.item.source for r in rows]
    tf = [feats[i] for i in train_idx]
    ts = [srcs[i] for i in train_idx]
    out: dict[str, dict[str, Any]] = {}
    status = {}
    for mode in ("per_source", "global"):
        rule = fit_rule(tf, ts, version, mode)
        status[mode], _ = rule.apply(feats, srcs)
    for s in sorted(set(srcs)):
        idx = [i for i, x in enumerate(srcs) if x == s]
        out[s] = {
            "n": len(idx),
            "subjects": len({rows[i].item.subject_id for i in idx}),
            "per_source": int(sum(status["per_source"][i] for i in idx)),
            "global": int(sum(status["global"][i] for i in idx)),
            "clinical": int(sum(rows[i].as_status for i in idx)),
        }
    return out


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
    from tqdm import tqdm

    from ml.io import ImageError

    if rule not in ("v1", "v2"):
        raise CliError(f"unknown rule {rule!r}; expected v1 or v2")
    if structure not in adapters.STRUCTURES:
        raise CliError(f"unknown structure {structure!r}; expected vertebral_body or disc")
    if not 0.0 < test_fraction < 1.0:
        raise CliError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    src = Path(source_path)
    out = Path(out_dir)
    _check_out(out)
    scan = scan_source(source_kind, src, include_ct=include_ct, labels_csv=labels_csv)
    items = sorted(scan.items, key=lambda it: (it.source, it.subject_id, it.source_path))
    skipped = list(scan.skipped)
    normalization = "global" if global_thresholds else "per_source"

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for sub in ("images", "masks", "annotations"):
            (tmp / sub).mkdir()
        rows: list[Row] = []
        bar = tqdm(items, desc="prepare", unit="slice", file=sys.stderr, disable=not progress)
        for item in bar:
            try:
                image, mask, info = process_item(item, structure, include_ct)
            except ImageError as exc:
                skipped.append((item.source_path, f"{exc.code}: {exc.message}"))
                continue
            except _Skip as exc:
                skipped.append((item.source_path, str(exc)))
                continue
            idx = len(rows)
            _write_png(tmp / "images" / f"img_{idx:04d}.png", image)
            _write_png(tmp / "masks" / f"mask_{idx:04d}.png", mask)
            rows.append(
                Row(idx, item, info["mask_kind"], info["bbox"], info["n_points"],
                    image_features(image), structure)
            )  # fmt: skip
        bar.close()
        if not rows:
            raise CliError(
                f"no usable images in {src}: all {len(items)} candidates were skipped "
                f"(e.g. {skipped[-1][1] if skipped else 'unknown'})"
            )

        clinical = all(r.item.label is not None for r in rows) and labels_csv is not None
        label_source = "clinical" if clinical else label_source_name(rule)
        feats = [r.features for r in rows]
        srcs = [r.item.source for r in rows]

        # Provisional labels (rule fitted on everything) only serve to stratify the split.
        if clinical:
            provisional = np.array([r.item.label[0] for r in rows])  # type: ignore[index]
        else:
            provisional, _ = fit_rule(feats, srcs, rule, normalization).apply(feats, srcs)
        if image_level_split:
            units = [f"{r.item.source}/{r.item.source_path}" for r in rows]
            assign = stratified_split(
                units, [int(p) for p in provisional], test_fraction, seed, groups=srcs
            )
            for r, u in zip(rows, units, strict=True):
                r.split = assign[u]
        else:
            subjects, strata = subject_strata(
                [r.item.subject_id for r in rows], srcs, [int(p) for p in provisional]
            )
            assign = stratified_split(
                subjects, [st for _, st in strata], test_fraction, seed,
                groups=[src for src, _ in strata],
            )  # fmt: skip
            for r in rows:
                r.split = assign[r.item.subject_id]
        train_idx = [i for i, r in enumerate(rows) if r.split == "train"]

        fitted: LabelRule = fit_rule(
            [feats[i] for i in train_idx], [srcs[i] for i in train_idx], rule, normalization
        )
        status, stage = fitted.apply(feats, srcs)
        score = fitted.score(feats, srcs)
        for i, r in enumerate(rows):
            r.score = float(score[i])
            if clinical:
                r.as_status, r.stage = r.item.label  # type: ignore[misc]
            else:
                r.as_status, r.stage = int(status[i]), int(stage[i])
        fitted.meta["used_for_labels"] = not clinical
        fitted.meta["split"] = "image" if image_level_split else "subject"
        fitted.meta["seed"] = seed
        fitted.save(tmp / "label_rule.json")

        csv_bytes = _csv_bytes(rows, label_source)
        (tmp / "annotations" / "dataset.csv").write_bytes(csv_bytes)
        rates = _rates(rows, train_idx, rule)
        tables = _distribution_tables(rows, label_source, "" if clinical else normalization)
        rate_table = _rate_table(rates, clinical)
        info_text = _info_text(
            source_kind=source_kind, src=src, rows=rows, label_source=label_source,
            normalization=normalization, fitted=fitted, rates=rates, tables=tables,
            rate_table=rate_table, skipped=skipped, notes=scan.notes,
            image_level_split=image_level_split, seed=seed, test_fraction=test_fraction,
            structure=structure, csv_hash=hashlib.sha256(csv_bytes).hexdigest(),
        )  # fmt: skip
        (tmp / "dataset_info.txt").write_text(info_text, encoding="utf-8")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    split_counts = dict(Counter(r.split for r in rows))
    n_subjects = len({r.item.subject_id for r in rows})
    summary = "\n\n".join(
        [
            f"Wrote {len(rows)} slices of {n_subjects} subjects to {out} "
            f"(train {split_counts.get('train', 0)}, test {split_counts.get('test', 0)}; "
            f"split by {'image (leaky, comparison only)' if image_level_split else 'subject'})",
            tables,
            rate_table,
            _stage_by_source(rows),
            _skip_summary(skipped),
            f"Labels: {label_source}. "
            + ("Clinical labels from the given CSV." if clinical else PROVENANCE),
            RESEARCH_USE_NOTICE,
        ]
    )
    return PrepareResult(
        out_dir=out,
        n_images=len(rows),
        n_subjects=n_subjects,
        split_counts=split_counts,
        label_source=label_source,
        summary=summary,
        rates=rates,
        skipped=skipped,
    )


def _info_text(
    *,
    source_kind: str,
    src: Path,
    rows: list[Row],
    label_source: str,
    normalization: str,
    fitted: LabelRule,
    rates: dict[str, dict[str, Any]],
    tables: str,
    rate_table: str,
    skipped: list[tuple[str, str]],
    notes: list[str],
    image_level_split: bool,
    seed: int,
    test_fraction: float,
    structure: str,
    csv_hash: str,
) -> str:
    n_sub = {s: len({r.item.subject_id for r in rows if r.split == s}) for s in ("train", "test")}
    n_img = {s: sum(r.split == s for r in rows) for s in ("train", "test")}
    kinds = Counter(r.mask_kind for r in rows)
    sources = sorted({r.item.source for r in rows})
    t = fitted.thresholds
    thr = ", ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}=[{', '.join(f'{x:.4f}' for x in v)}]"
        for k, v in sorted(t.items())
    )
    parts = [
        "spondyscan dataset",
        RESEARCH_USE_NOTICE,
        "",
        f"source: {source_kind} {src.name}",
        f"images: {len(rows)}  subjects: {n_sub['train'] + n_sub['test']}",
        f"split: by {'image (leaky, comparison only)' if image_level_split else 'subject'}, "
        f"stratified on AS status within each source, test fraction {test_fraction} per "
        f"source, seed {seed}",
        f"  train: {n_img['train']} images, {n_sub['train']} subjects",
        f"  test:  {n_img['test']} images, {n_sub['test']} subjects",
        f"target structure: {structure}",
        "masks: " + ", ".join(f"{k} {kinds.get(k, 0)}" for k in MASK_KINDS),
        f"dataset.csv sha256: {csv_hash}",
        "",
        f"labels: {label_source}",
        ("  clinical labels from the given CSV; the feature rule below is for comparison only"
         if label_source == "clinical" else f"  {PROVENANCE}"),
        f"rule: {fitted.version}, normalisation {normalization} (midrank percentiles within the "
        f"group), fitted on {fitted.n_fit} training images",
        f"thresholds (on the normalised scale): {thr}",
        "",
        tables,
        "",
        rate_table,
        "",
        _stage_by_source(rows),
        "",
        "sources:",
    ]  # fmt: skip
    for s in sources:
        parts.append(f"  {s}: {CITATIONS.get(s, 'no citation on record (user data)')}")
    if notes:
        parts += ["", "notes:"] + [f"  {n}" for n in notes]
    parts += ["", f"skipped files: {len(skipped)}"]
    parts += [f"  {p}: {reason}" for p, reason in skipped]
    return "\n".join(parts) + "\n"


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
