"""k-fold cross-validation grouped by subject and stratified by source, with subject-bootstrap CIs.

``spondyscan evaluate --cv 5 --model CONFIG_KEY --dataset DIR``: every subject of the prepared
dataset (train and test alike) goes to one of ``k`` folds, spread evenly within each source;
for each fold the model is trained by its own config on the other folds (the config's own
validation split, early stopping and schedule) and tested on the held-out fold, exactly as
``spondyscan train`` does for the fixed split. The held-out predictions of all folds are pooled
(every slice predicted once, by a model that never saw its subject) and each headline metric comes
with its mean over folds and a 95 % interval from resampling **subjects** with replacement.

A config that warm-starts from another bundle (``training.init_from``, as the default segmenter
does) has that bundle's own config trained on the fold first and starts from it, so no fold starts
from weights that saw its held-out subjects. Folds take tens of minutes each for a segmenter on a
CPU, so an interrupted run can be continued (``--resume``): a fold's bundle is reused only when its
manifest shows the same config, epoch cap and fold dataset (the sha256 of its dataset.csv).

Every finished fold leaves a small result file: its provenance (config, epoch cap, k, deal seed,
fold dataset hash) and the held-out per-slice scores. ``spondyscan evaluate --cv`` keeps them in
the bundle (``cross_validation/foldN.json``), so the pooled numbers can be recomputed from the
bundle alone, and a cross-validation can be split over runs or machines (``--folds 0,1`` here,
``--folds 2,3,4 --resume`` elsewhere with the bundle's folder): a result stands in for its fold
only when all of its provenance matches.

The labels are the dataset's own (the feature rule fitted on the original training split); the
rule is not refitted per fold, which the report says.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Pooled per-slice metrics: name -> (what it needs, how it is computed from the pooled rows).
CLASSIFIER_METRICS = ("binary_accuracy", "stage_accuracy", "stage_macro_f1", "early_recall")
SEGMENTER_METRICS = ("iou", "dice")


def subject_folds(subject_ids: np.ndarray, sources: np.ndarray, k: int, seed: int = 0) -> dict:
    """Subject -> fold (0..k-1): each source's subjects shuffled and dealt out in turn, the deal
    continuing across sources so the folds stay the same size."""
    if k < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[str]] = {}
    for sid, src in zip(subject_ids.tolist(), sources.tolist(), strict=True):
        by_source.setdefault(str(src), [])
        if sid not in by_source[str(src)]:
            by_source[str(src)].append(str(sid))
    if sum(len(v) for v in by_source.values()) < k:
        raise ValueError(f"{k} folds need at least {k} subjects")
    folds: dict[str, int] = {}
    deal = 0
    for src in sorted(by_source):
        subjects = sorted(by_source[src])
        rng.shuffle(subjects)
        for sid in subjects:
            folds[sid] = deal % k
            deal += 1
    return folds


def write_fold_dataset(dataset_dir: Path, out_dir: Path, test_subjects: set[str]) -> Path:
    """A prepared-dataset folder whose test split is ``test_subjects`` (images linked, not
    copied)."""
    dataset_dir, out_dir = Path(dataset_dir).resolve(), Path(out_dir)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    for name in ("images", "masks", "label_rule.json", "dataset_info.txt"):
        src, dst = dataset_dir / name, out_dir / name
        if src.exists() and not dst.exists():
            dst.symlink_to(src)
    with open(dataset_dir / "annotations" / "dataset.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    for r in rows:
        r["split"] = "test" if r["subject_id"] in test_subjects else "train"
    with open(out_dir / "annotations" / "dataset.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out_dir


@dataclass
class CVReport:
    """Cross-validated metrics of one config: per fold, pooled mean and subject-bootstrap CI."""

    key: str
    task: str
    k: int
    folds: list[dict[str, Any]] = field(default_factory=list)  # per fold: n, subjects, metrics
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> pooled, ci95
    subjects: int = 0
    slices: int = 0
    seconds: float = 0.0  # training time summed over the folds, wherever each was trained
    by_source: dict[str, dict[str, Any]] = field(default_factory=dict)  # pooled per source
    missing: list[int] = field(default_factory=list)  # folds with no result yet: nothing pooled
    note: str = (
        "labels are the dataset's own (feature rule fitted on the original training split, "
        "not refitted per fold)"
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "task": self.task, "k": self.k, "folds": self.folds,
            "metrics": self.metrics, "by_source": self.by_source, "subjects": self.subjects,
            "slices": self.slices, "seconds": round(self.seconds, 1), "note": self.note,
            **({"missing": self.missing} if self.missing else {}),
        }  # fmt: skip


def _macro_f1(y: np.ndarray, p: np.ndarray, n_classes: int) -> float:
    f1s = []
    for c in range(n_classes):
        tp = float(np.sum((p == c) & (y == c)))
        fp = float(np.sum((p == c) & (y != c)))
        fn = float(np.sum((p != c) & (y == c)))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def pooled_metrics(rows: list[dict[str, Any]], task: str) -> dict[str, float]:
    """Headline metrics of pooled per-slice rows (metrics_per_image.csv of each fold)."""
    if task == "segmentation":
        return {m: float(np.mean([float(r[m]) for r in rows])) for m in SEGMENTER_METRICS}
    y = np.array([int(r["as_status"]) for r in rows])
    p = np.array([int(r["pred_as_status"]) for r in rows])
    ys = np.array([int(r["stage"]) for r in rows])
    ps = np.array([int(r["pred_stage"]) for r in rows])
    early = ys == 1
    return {
        "binary_accuracy": float(np.mean(y == p)),
        "stage_accuracy": float(np.mean(ys == ps)),
        "stage_macro_f1": _macro_f1(ys, ps, 4),
        "early_recall": float(np.mean(ps[early] == 1)) if early.any() else float("nan"),
    }


def subject_bootstrap(
    rows: list[dict[str, Any]], task: str, n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95 % percentile interval of each pooled metric, resampling subjects with replacement."""
    rng = np.random.default_rng(seed)
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_subject.setdefault(r["subject_id"], []).append(r)
    subjects = sorted(by_subject)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        pick = rng.integers(0, len(subjects), len(subjects))
        resampled = [r for j in pick for r in by_subject[subjects[j]]]
        for name, value in pooled_metrics(resampled, task).items():
            if np.isfinite(value):
                samples.setdefault(name, []).append(value)
    return {
        name: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
        for name, v in samples.items()
    }


def plain_config(cfg: dict[str, Any]) -> Any:
    """A config as the manifest stores it (JSON types, no private keys), for comparison."""
    import json

    return json.loads(json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")}))


def reusable_bundle(
    bundle: Path, cfg: dict[str, Any], fold_dir: Path, epochs: int | list[int] | None
) -> bool:
    """Whether ``bundle`` was trained by this very config (and epoch cap) on this fold's dataset
    (the same dataset.csv bytes, so the same held-out subjects) and scored on its test split."""
    from ml.bundle import BundleError, read_manifest
    from ml.data.dataset import read_rows

    try:
        m = read_manifest(bundle)
    except (BundleError, OSError):
        return False
    record = m.training.model_dump() if m.training else {}
    return (
        m.key == cfg["key"]
        and m.dataset is not None
        and m.dataset.hash == read_rows(fold_dir)[1]
        and record.get("config") == plain_config(cfg)
        and record.get("epochs_override") == epochs
        and (bundle / "metrics_per_image.csv").is_file()
    )


@dataclass
class FoldModel:
    """One config's bundle on one fold: trained now, or reused from an earlier run."""

    bundle: Path
    task: str
    epochs_run: int | None
    seconds: float  # its training time (for a reused bundle, the earlier run's)
    reused: bool


def _fold_model(
    cfg: dict[str, Any],
    fold_dir: Path,
    fold_work: Path,
    epochs: int | list[int] | None,
    reuse: bool,
) -> FoldModel:
    """Train ``cfg`` on one fold (``fold_work/models/<key>``, run in ``fold_work/run``), or reuse
    the bundle an earlier run left there when :func:`reusable_bundle` says it may."""
    from ml.bundle import read_manifest
    from ml.training.loop import train

    bundles = fold_work / "models"
    bundle = bundles / cfg["key"]
    reused = reuse and reusable_bundle(bundle, cfg, fold_dir, epochs)
    if not reused:
        shutil.rmtree(bundles, ignore_errors=True)
        bundle = train(
            cfg, fold_dir, models_dir=bundles, run_dir=fold_work / "run", epochs=epochs,
            verbose=0,
        ).bundle_dir  # fmt: skip
    m = read_manifest(bundle)
    t = m.training
    return FoldModel(
        bundle, m.task, t.epochs_run if t else None, float(t.seconds or 0) if t else 0.0, reused
    )


def _parent_config(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The config of the bundle ``training.init_from`` warm-starts from, retrained per fold.

    A warm start from a bundle trained on the whole training split would hand every fold weights
    that have seen its held-out subjects, so the parent is retrained on the fold first; a
    warm-start bundle without a config of its own cannot be, and is refused.
    """
    from ml.training.config import load_config

    parent = cfg["training"]["init_from"]
    if parent is None:
        return None
    try:
        return load_config(parent)
    except FileNotFoundError:
        raise ValueError(
            f"training.init_from names {parent!r}, which has no training config to retrain on "
            "each fold: every fold would start from weights that may have seen its held-out "
            "subjects"
        ) from None


FOLD_FORMAT = "spondyscan.cv-fold/v1"
CV_RESULTS = "cross_validation"  # the bundle folder that keeps each fold's result


def fold_result_name(i: int) -> str:
    """File name of fold ``i``'s result in a results folder (a bundle's ``cross_validation/``)."""
    return f"fold{i}.json"


def write_fold_result(path: Path, result: dict[str, Any]) -> None:
    """Write one fold's result atomically (a half-written file is never left to be reused)."""
    import json

    from ml.bundle import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")


def matching_fold_result(
    path: Path, cfg: dict[str, Any], k: int, seed: int, fold: int, fold_hash: str, epochs: Any
) -> dict[str, Any] | None:
    """The fold result at ``path`` when it was made by this config and epoch cap on this very
    fold (same k, deal seed, fold index and fold dataset hash); otherwise None."""
    import json

    try:
        result = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    wanted = {
        "format": FOLD_FORMAT, "key": cfg["key"], "k": k, "seed": seed, "fold": fold,
        "dataset_sha256": fold_hash, "config": plain_config(cfg), "epochs_cap": epochs,
    }  # fmt: skip
    if not isinstance(result, dict) or any(result.get(f) != v for f, v in wanted.items()):
        return None
    if not isinstance(result.get("rows"), list) or not isinstance(result.get("record"), dict):
        return None
    return result


def by_source(rows: list[dict[str, Any]], task: str) -> dict[str, dict[str, Any]]:
    """Pooled metrics of each source's held-out slices (``n``) and its subject count, keyed as
    the single split's ``per_source``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r.get("source", "")), []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for source in sorted(groups):
        members = groups[source]
        values = pooled_metrics(members, task)
        out[source] = {
            "subjects": len({r["subject_id"] for r in members}),
            "n": len(members),
            **{m: round(v, 4) for m, v in values.items() if np.isfinite(v)},
        }
    return out


def cross_validate(
    config: str | Path | dict[str, Any],
    dataset_dir: str | Path,
    work_dir: str | Path,
    *,
    k: int = 5,
    seed: int = 0,
    epochs: int | list[int] | None = None,
    n_boot: int = 1000,
    resume: bool = False,
    folds: list[int] | None = None,
    results_dir: str | Path | None = None,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
) -> CVReport:
    """Train and test one config on ``k`` subject-grouped, source-stratified folds.

    A config that warm-starts from another bundle (``training.init_from``) has that bundle's
    config trained on each fold first, in the parent's own work folder (``work_dir``'s sibling
    named after the parent key, the layout its own cross-validation uses), and starts from it;
    a parent bundle already there that matches (same config, cap and fold) is reused.

    Each finished fold leaves its result (provenance and held-out per-slice scores) in
    ``work_dir/foldN/result.json`` and, when ``results_dir`` is given, as ``foldN.json`` there.
    A cross-validation can therefore be split over runs and machines: ``folds`` limits which
    folds this run trains, and with ``resume`` a matching result from either place stands in for
    its fold. A fold with neither is listed in ``report.missing`` and nothing is pooled.

    Args:
        config: YAML path, config key or dict (as for ``spondyscan train``).
        dataset_dir: a prepared dataset (every row, train and test, takes part).
        work_dir: where the fold datasets, runs and bundles go (kept for inspection).
        k: number of folds.
        seed: seeds the deal of subjects to folds.
        epochs: cap on each stage's epochs (quick runs); None runs the config's schedule. An
            integer cap applies to a parent config too; a per-stage list does not.
        n_boot: bootstrap resamples of subjects.
        resume: reuse a fold's result, or its bundle, left by an earlier run when it was made by
            the same config and cap on the same fold (:func:`matching_fold_result`,
            :func:`reusable_bundle`).
        folds: the folds this run may train (None: every fold).
        results_dir: a folder of fold results to read (with ``resume``) and to add to.
        progress: called after each fold with its index and record.
    """
    from ml.data.dataset import load_split, read_rows
    from ml.training.config import load_config

    cfg = load_config(config)
    parent = _parent_config(cfg)
    parent_epochs = epochs if isinstance(epochs, int) else None
    data = load_split(dataset_dir, None)
    deal = subject_folds(data.subject_ids, data.sources, k, seed)
    if folds is not None and not set(folds) <= set(range(k)):
        raise ValueError(f"--folds must name folds 0..{k - 1}, got {sorted(set(folds))}")
    subject_of = {r["image_id"]: r["subject_id"] for r in data.rows}
    work = Path(work_dir)
    results = Path(results_dir) if results_dir is not None else None
    report = CVReport(key=cfg["key"], task="", k=k)
    pooled: list[dict[str, Any]] = []
    for i in range(k):
        test_subjects = {s for s, f in deal.items() if f == i}
        fold_dir = write_fold_dataset(
            Path(dataset_dir), work / f"fold{i}" / "dataset", test_subjects
        )
        fold_hash = read_rows(fold_dir)[1]
        places = [work / f"fold{i}" / "result.json"]
        places += [results / fold_result_name(i)] if results is not None else []
        result = None
        if resume:
            found = (matching_fold_result(p, cfg, k, seed, i, fold_hash, epochs) for p in places)
            result = next((r for r in found if r is not None), None)
        if result is not None:
            record = {**result["record"], "reused": True}
        elif folds is not None and i not in folds:
            report.missing.append(i)
            continue
        else:
            result = _train_fold(
                cfg, parent, fold_dir, work, i, epochs, parent_epochs, resume, subject_of
            )
            result.update({"k": k, "seed": seed, "dataset_sha256": fold_hash})
            record = result["record"]
        for place in places:
            write_fold_result(place, result)
        report.task = report.task or result["task"]
        pooled += result["rows"]
        report.folds.append(record)
        report.seconds += float(result.get("seconds") or 0.0)
        if progress:
            progress(i, record)
    report.subjects = len(deal)
    if report.missing:
        return report
    means = pooled_metrics(pooled, report.task)
    cis = subject_bootstrap(pooled, report.task, n_boot)
    for name, value in means.items():
        if not np.isfinite(value):
            continue  # undefined on every slice pooled (no Early slice at all)
        fold_values = [f["metrics"][name] for f in report.folds if f["metrics"][name] is not None]
        lo, hi = cis.get(name, (float("nan"), float("nan")))
        report.metrics[name] = {
            "pooled": round(value, 4),
            "fold_mean": round(float(np.mean(fold_values)), 4) if fold_values else None,
            "ci95": [round(lo, 4), round(hi, 4)],
        }
    report.by_source = by_source(pooled, report.task)
    report.slices = len(pooled)
    return report


def _train_fold(
    cfg: dict[str, Any],
    parent: dict[str, Any] | None,
    fold_dir: Path,
    work: Path,
    i: int,
    epochs: int | list[int] | None,
    parent_epochs: int | None,
    resume: bool,
    subject_of: dict[str, str],
) -> dict[str, Any]:
    """Train (or, with ``resume``, reuse the bundle of) one fold and score its held-out slices:
    the fold's result without the deal's provenance (k, seed, dataset hash)."""
    record: dict[str, Any] = {"fold": i}
    fold_cfg, seconds = cfg, 0.0
    if parent is not None:
        start = _fold_model(
            parent, fold_dir, work.parent / parent["key"] / f"fold{i}", parent_epochs, True
        )
        seconds += start.seconds
        fold_cfg = {**cfg, "training": {**cfg["training"], "init_from": str(start.bundle)}}
        record["init_from"] = {"bundle": str(start.bundle), "reused": start.reused}
    fm = _fold_model(fold_cfg, fold_dir, work / f"fold{i}", epochs, resume)
    seconds += fm.seconds
    with open(fm.bundle / "metrics_per_image.csv", newline="") as fh:
        rows = [dict(r, subject_id=subject_of[r["image_id"]]) for r in csv.DictReader(fh)]
    record.update({
        "subjects": len({r["subject_id"] for r in rows}),
        "n": len(rows),
        "metrics": {  # None: undefined on this fold (e.g. Early recall without Early slices)
            m: round(v, 4) if np.isfinite(v) else None
            for m, v in pooled_metrics(rows, fm.task).items()
        },
        "epochs": fm.epochs_run, "reused": fm.reused, "seconds": round(seconds, 1),
    })  # fmt: skip
    return {
        "format": FOLD_FORMAT, "key": cfg["key"], "fold": i, "task": fm.task,
        "config": plain_config(cfg), "epochs_cap": epochs, "seconds": round(seconds, 1),
        "record": record, "rows": rows,
    }  # fmt: skip
