"""What `spondyscan prepare` writes and prints: dataset.csv, dataset_info.txt and the summary."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ml import RESEARCH_USE_NOTICE
from ml.data.labels import AS_STATUS_NAMES, PROVENANCE, STAGE_NAMES, LabelRule
from ml.data.prepare_slices import Row

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


def distribution_tables(rows: list[Row], label_source: str, normalization: str) -> str:
    """AS status and stage counts per split.

    Args:
        rows: the labelled, split rows.
        label_source: where the labels come from (shown in the titles).
        normalization: the rule's normalisation, or ``""`` for clinical labels.

    Returns:
        The two tables as text.
    """
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


def rate_table(rates: dict[str, dict[str, Any]], clinical: bool) -> str:
    """AS+ rate per source under both normalisations (and the clinical labels when given).

    Args:
        rates: per-source counts from :func:`ml.data.prepare_labels.source_rates`.
        clinical: add the clinical column.

    Returns:
        The table as text.
    """
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


def stage_by_source(rows: list[Row]) -> str:
    """Stage counts per source, as a table."""
    srcs = sorted({r.item.source for r in rows})
    body = []
    for s in srcs:
        rs = [r for r in rows if r.item.source == s]
        body.append([s, *(sum(r.stage == k for r in rs) for k in range(4)), len(rs)])
    return _table("Stage per source", ["source", *STAGE_NAMES, "total"], body)


def csv_bytes(rows: list[Row], label_source: str) -> bytes:
    """The contents of ``annotations/dataset.csv`` (UTF-8, ``\\n`` line ends)."""
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


def skip_summary(skipped: list[tuple[str, str]]) -> str:
    """Skipped files grouped by reason, most frequent first, with up to three examples each."""
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


def summary_text(
    *,
    rows: list[Row],
    n_subjects: int,
    split_counts: dict[str, int],
    out: Path,
    image_level_split: bool,
    tables: str,
    rate_table: str,
    skipped: list[tuple[str, str]],
    label_source: str,
    clinical: bool,
) -> str:
    """What ``spondyscan prepare`` prints when it is done.

    Args:
        rows: the written rows.
        n_subjects: subjects among them.
        split_counts: rows per split.
        out: the dataset folder.
        image_level_split: the split was by image rather than by subject.
        tables: from :func:`distribution_tables`.
        rate_table: from :func:`rate_table`.
        skipped: (source path, reason) of every skipped file.
        label_source: where the labels come from.
        clinical: the labels are clinical (from a CSV).

    Returns:
        The summary text, without a trailing newline.
    """
    return "\n\n".join(
        [
            f"Wrote {len(rows)} slices of {n_subjects} subjects to {out} "
            f"(train {split_counts.get('train', 0)}, test {split_counts.get('test', 0)}; "
            f"split by {'image (leaky, comparison only)' if image_level_split else 'subject'})",
            tables,
            rate_table,
            stage_by_source(rows),
            skip_summary(skipped),
            f"Labels: {label_source}. "
            + ("Clinical labels from the given CSV." if clinical else PROVENANCE),
            RESEARCH_USE_NOTICE,
        ]
    )


def info_text(
    *,
    source_kind: str,
    src: Path,
    rows: list[Row],
    label_source: str,
    normalization: str,
    fitted: LabelRule,
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
    """The contents of ``dataset_info.txt``: provenance, split, rule, tables and citations.

    The keyword arguments are the run's options and the outputs of the other functions here;
    ``csv_hash`` is the sha256 of dataset.csv.
    """
    n_sub = {s: len({r.item.subject_id for r in rows if r.split == s}) for s in ("train", "test")}
    n_img = {s: sum(r.split == s for r in rows) for s in ("train", "test")}
    kinds = Counter(r.mask_kind for r in rows)
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
        f"thresholds (on the normalised scale): {_thresholds(fitted)}",
        "",
        tables,
        "",
        rate_table,
        "",
        stage_by_source(rows),
        "",
        "sources:",
    ]  # fmt: skip
    for s in sorted({r.item.source for r in rows}):
        parts.append(f"  {s}: {CITATIONS.get(s, 'no citation on record (user data)')}")
    if notes:
        parts += ["", "notes:"] + [f"  {n}" for n in notes]
    parts += ["", f"skipped files: {len(skipped)}"]
    parts += [f"  {p}: {reason}" for p, reason in skipped]
    return "\n".join(parts) + "\n"


def _thresholds(fitted: LabelRule) -> str:
    return ", ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}=[{', '.join(f'{x:.4f}' for x in v)}]"
        for k, v in sorted(fitted.thresholds.items())
    )
