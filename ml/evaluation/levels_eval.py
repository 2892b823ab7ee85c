"""Per-level Dice of a segmenter whose bodies are named by :mod:`ml.levels`, on the test split.

``spondyscan evaluate --levels --model KEY --dataset DIR --lumbar-mri ../shared/data/lumbar_mri``:
the prepared dataset says which slices are in the test split; the original label masks (one
value per structure) and their level names come from the Kaggle-layout folder's ``slices.csv``.
Slices whose levels are unknown (``chu``) or whose structures are discs (``menezesreis``) are
left out. Each level's Dice is the predicted body named L3 against the true L3, so a body found
but misnamed counts as a miss; the mean comes with a 95 % bootstrap interval over subjects.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml.evaluation.metrics import bootstrap_ci
from ml.levels import LUMBAR, level_dice, name_levels


@dataclass
class LevelSlice:
    """One test slice with known levels: its subject and the true mask of each level."""

    image_index: int
    subject_id: str
    source: str
    truth: dict[str, np.ndarray]


@dataclass
class LevelReport:
    """Per-level Dice (mean and 95 % CI over subjects), naming accuracy, and counts."""

    model: str
    per_level: dict[str, dict[str, Any]] = field(default_factory=dict)
    all_levels_named: float = 0.0  # share of slices whose every true level got Dice > 0.5
    slices: int = 0
    subjects: int = 0
    sources: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, **self.as_dict_for_manifest()}

    def as_dict_for_manifest(self) -> dict[str, Any]:
        """The fields of :class:`ml.manifest.LevelsRecord`."""
        return {
            "per_level": self.per_level,
            "all_levels_named": round(self.all_levels_named, 4),
            "slices": self.slices,
            "subjects": self.subjects,
            "sources": self.sources,
        }


def level_slices(dataset_dir: str | Path, lumbar_mri: str | Path, split: str = "test"):
    """The split's slices with named vertebral-body levels, matched to their label masks."""
    import cv2

    from ml.data.dataset import read_rows

    lumbar_mri = Path(lumbar_mri)
    index = {}
    with open(lumbar_mri / "slices.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            index[(r["source"], Path(r["filename"]).stem)] = r
    rows, _ = read_rows(dataset_dir)
    out = []
    split_rows = [r for r in rows if r.get("split") == split]
    for i, r in enumerate(split_rows):
        meta = index.get((r["source"], Path(r.get("source_path", "")).stem))
        if meta is None or meta["structure"] != "vertebral_body":
            continue
        names = {int(k): v for k, v in json.loads(meta["mask_labels"] or "{}").items() if v}
        if not any(v in LUMBAR for v in names.values()):
            continue
        mask = cv2.imread(str(lumbar_mri / meta["mask_path"]), cv2.IMREAD_UNCHANGED)
        if mask is None:
            continue
        truth = {v: mask == k for k, v in names.items() if v in LUMBAR}
        out.append(LevelSlice(i, r["subject_id"], r["source"], truth))
    return out


def score_levels(
    model: str, pred_masks: np.ndarray, slices: list[LevelSlice], n_boot: int = 1000
) -> LevelReport:
    """Per-level Dice of named predicted masks (N, S, S) against the slices' true levels."""
    import cv2

    per: dict[str, list[tuple[float, str]]] = {name: [] for name in LUMBAR}
    all_named = []
    for s, pred in zip(slices, pred_masks, strict=True):
        shape = next(iter(s.truth.values())).shape
        if pred.shape != shape:
            pred = cv2.resize(pred.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST)
        scores = level_dice(name_levels(pred), s.truth)
        for name, d in scores.items():
            per[name].append((d, s.subject_id))
        all_named.append(all(d > 0.5 for d in scores.values()))
    report = LevelReport(model=model, slices=len(slices))
    report.subjects = len({s.subject_id for s in slices})
    for s in slices:
        report.sources[s.source] = report.sources.get(s.source, 0) + 1
    for name, vals in per.items():
        if not vals:
            continue
        dices = [d for d, _ in vals]
        lo, hi = bootstrap_ci(dices, [sid for _, sid in vals], n_boot)
        report.per_level[name] = {
            "dice": round(float(np.mean(dices)), 4),
            "ci95": [round(lo, 4), round(hi, 4)],
            "n": len(dices),
        }
    report.all_levels_named = float(np.mean(all_named)) if all_named else 0.0
    return report


def evaluate_levels(
    bundle_dir: str | Path, dataset_dir: str | Path, lumbar_mri: str | Path
) -> LevelReport:
    """Segment the test split's level-labelled slices with a bundle and score each level."""
    from ml.bundle import load_bundle
    from ml.data.dataset import load_split, resize_images
    from ml.predict import segment

    bundle = load_bundle(bundle_dir)
    if bundle.task != "segmentation":
        raise ValueError(f"{bundle_dir} is a {bundle.task} model; levels need a segmenter")
    slices = level_slices(dataset_dir, lumbar_mri)
    if not slices:
        raise ValueError("no test slice with known vertebral levels (needs myosegmentum/zukic)")
    test = load_split(dataset_dir, "test")
    images = test.images[[s.image_index for s in slices]]
    prob = segment(bundle.model, resize_images(images, bundle.manifest.input.size))
    prob = np.asarray(prob)
    prob = prob[..., 0] if prob.ndim == 4 else prob
    masks = (prob >= bundle.manifest.mask_threshold).astype(np.uint8)
    return score_levels(bundle.manifest.key, masks, slices)


def markdown_table(report: LevelReport) -> str:
    """Per-level Dice with intervals, one row per level, and the all-named share."""
    lines = ["| Level | Dice | 95 % CI (subjects) | slices |", "|---|---:|---|---:|"]
    for name in LUMBAR:
        row = report.per_level.get(name)
        if row:
            lo, hi = row["ci95"]
            lines.append(f"| {name} | {row['dice']:.3f} | {lo:.3f}-{hi:.3f} | {row['n']} |")
    lines.append(
        f"| every level named right (Dice > 0.5) | {report.all_levels_named:.1%} of "
        f"{report.slices} slices | | |"
    )
    return "\n".join(lines) + "\n"
