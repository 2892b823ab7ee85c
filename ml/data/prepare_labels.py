"""Labels and the train/test split of the rows `spondyscan prepare` made.

The split is stratified on AS status, but the label rule may only be fitted on the training
split, so the split uses provisional labels from the rule fitted on all rows; the final labels
come from the rule refitted on the training split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ml.data.labels import LabelRule, fit_rule
from ml.data.prepare_slices import Row
from ml.data.splits import stratified_split, subject_strata


def label_and_split(
    rows: list[Row],
    *,
    clinical: bool,
    rule: str,
    normalization: str,
    image_level_split: bool,
    test_fraction: float,
    seed: int,
) -> tuple[LabelRule, list[int]]:
    """Split the rows and label them, in place (``split``, ``as_status``, ``stage``, ``score``).

    Args:
        rows: the processed rows.
        clinical: every row has a clinical label, which then wins over the rule.
        rule: feature rule version.
        normalization: ``"per_source"`` or ``"global"``.
        image_level_split: split by image instead of by subject.
        test_fraction: share of subjects (or images) in the test split.
        seed: split seed.

    Returns:
        The rule fitted on the training split (its ``meta`` records how it was used) and the
        indices of the training rows.
    """
    provisional = _provisional_labels(rows, clinical, rule, normalization)
    _assign_splits(rows, provisional, image_level_split, test_fraction, seed)
    train_idx = [i for i, r in enumerate(rows) if r.split == "train"]
    fitted = _apply_final_labels(rows, train_idx, clinical, rule, normalization)
    fitted.meta["used_for_labels"] = not clinical
    fitted.meta["split"] = "image" if image_level_split else "subject"
    fitted.meta["seed"] = seed
    return fitted, train_idx


def _provisional_labels(
    rows: list[Row], clinical: bool, rule: str, normalization: str
) -> np.ndarray:
    """AS status used only to stratify the split (the rule here sees every row)."""
    if clinical:
        return np.array([r.item.label[0] for r in rows])  # type: ignore[index]
    feats = [r.features for r in rows]
    srcs = [r.item.source for r in rows]
    provisional, _ = fit_rule(feats, srcs, rule, normalization).apply(feats, srcs)
    return provisional


def _assign_splits(
    rows: list[Row],
    provisional: np.ndarray,
    image_level_split: bool,
    test_fraction: float,
    seed: int,
) -> None:
    srcs = [r.item.source for r in rows]
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


def _apply_final_labels(
    rows: list[Row], train_idx: list[int], clinical: bool, rule: str, normalization: str
) -> LabelRule:
    """Fit the rule on the training rows and label every row (clinical labels win)."""
    feats = [r.features for r in rows]
    srcs = [r.item.source for r in rows]
    fitted = fit_rule(
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
    return fitted


def source_rates(rows: list[Row], train_idx: list[int], version: str) -> dict[str, dict[str, Any]]:
    """AS+ counts per source under both normalisations (rules fitted on the training rows).

    Args:
        rows: the labelled rows.
        train_idx: indices of the training rows.
        version: feature rule version.

    Returns:
        Source -> ``n``, ``subjects``, ``per_source``, ``global`` and ``clinical`` counts.
    """
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
