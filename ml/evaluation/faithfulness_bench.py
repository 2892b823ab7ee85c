"""Pick each classifier's explanation method by measurement: a faithfulness benchmark.

Every classifier bundle x every method it supports (the Grad-CAM family, occlusion, RISE,
integrated gradients, and attention rollout where the model has attention layers) is run on a
fixed subset of a split's slices. Each map explains the AS-status head's predicted class (what
the service explains by default) and is scored by the deletion/insertion test of
:mod:`ml.explain.faithfulness`. Per method: the mean and a 95% confidence interval of the
deletion AUC, the insertion AUC and the score, and the share of all-zero maps. The interval is
a percentile bootstrap over *subjects*, because a subject's slices are near-identical and are
not independent evidence. The default method is the one with the highest mean score (to
0.01; ties go to the cheaper method, see :func:`pick_default`).

The subset (:func:`select_slices`) is deterministic and balanced: slices are taken round-robin
over the (source, AS status) cells, within a cell round-robin over subjects, and within a
subject from the middle slice outwards. Nothing in it is random, so the same dataset gives the
same slices on any machine.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, Field

from ml.evaluation.metrics import bootstrap_ci
from ml.manifest import ExplanationBenchmark, Manifest, MethodFaithfulness
from ml.vocab import MODEL_AGNOSTIC_METHODS, CamMethod

logger = logging.getLogger(__name__)

# Sized for a 2-core CPU (README: the whole benchmark took about 15 minutes there): two slices per
# (source, AS status) cell, and the service's own test (8 steps, one random order).
N_SLICES = 16
STEPS = 8
N_RANDOM = 1
BASELINE = "blur"
N_BOOT = 2000
HEAD = "binary_output"
# A map whose largest value is at most this is empty (as the service judges it).
EMPTY_MAP = 1e-6
# Mean scores (and insertion AUCs) closer than this count as a tie when picking the default.
RESOLUTION = 0.01


class SliceRef(BaseModel):
    """One benchmark slice: where it is in the split and whose it is."""

    index: int = Field(description="row in the split")
    image_id: str
    subject_id: str
    source: str
    as_status: int


class FaithfulnessTable(BaseModel):
    """The whole benchmark: what was measured on, how, and each model's measurements."""

    split: str
    dataset: str
    dataset_hash: str | None = None
    slices: list[SliceRef]
    steps: int
    n_random: int
    baseline: str
    n_boot: int
    seconds: float = Field(description="wall time of the whole run")
    machine: dict[str, Any] = Field(default_factory=dict)
    evaluated: str
    models: dict[str, ExplanationBenchmark]


class SliceScore(NamedTuple):
    """One map's faithfulness on one slice."""

    deletion_auc: float
    insertion_auc: float
    score: float
    empty: bool
    seconds: float


# ----------------------------------------------------------------------------- the subset


def _middle_out(count: int) -> list[int]:
    """0..count-1 ordered from the middle outwards (a subject's central slices first)."""
    mid = (count - 1) / 2.0
    return sorted(range(count), key=lambda i: (abs(i - mid), i))


def select_slices(rows: Sequence[dict[str, str]], n: int = N_SLICES) -> list[int]:
    """Indices of ``n`` rows, balanced over (source, AS status) and over subjects.

    Round-robin over the cells (sorted), within a cell over its subjects (sorted), within a
    subject from the middle of its slices (in row order) outwards; cells and subjects that run
    out are skipped. Deterministic: the same rows give the same indices.

    Args:
        rows: the split's ``dataset.csv`` rows (``source``, ``AS_status``, ``subject_id``).
        n: how many slices (all of them when the split has fewer).
    """
    cells: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(rows):
        cells[(r.get("source", ""), r.get("AS_status", ""))][r.get("subject_id", str(i))].append(i)
    queues = []
    for cell in sorted(cells):
        subjects = cells[cell]
        per_subject = [
            [subjects[s][k] for k in _middle_out(len(subjects[s]))] for s in sorted(subjects)
        ]
        # Round-robin over the cell's subjects: their first picks, then their second ...
        longest = max(len(q) for q in per_subject)
        queues.append([q[k] for k in range(longest) for q in per_subject if k < len(q)])
    picked: list[int] = []
    depth = 0
    while len(picked) < min(n, len(rows)):
        for queue in queues:
            if depth < len(queue) and len(picked) < n:
                picked.append(queue[depth])
        depth += 1
    return picked


# ----------------------------------------------------------------------------- statistics


def summarise(
    scores: Sequence[SliceScore], subjects: Sequence[str], n_boot: int = N_BOOT
) -> MethodFaithfulness:
    """Means and subject-bootstrap intervals of one method's per-slice scores."""

    def stat(values: list[float]) -> tuple[float, tuple[float, float]]:
        low, high = bootstrap_ci(values, subjects, n_boot)
        return round(float(np.mean(values)), 4), (round(low, 4), round(high, 4))

    score, score_ci = stat([s.score for s in scores])
    deletion, deletion_ci = stat([s.deletion_auc for s in scores])
    insertion, insertion_ci = stat([s.insertion_auc for s in scores])
    return MethodFaithfulness(
        n=len(scores),
        score=score,
        score_ci=score_ci,
        deletion_auc=deletion,
        deletion_auc_ci=deletion_ci,
        insertion_auc=insertion,
        insertion_auc_ci=insertion_ci,
        empty_fraction=round(float(np.mean([s.empty for s in scores])), 4),
        seconds_per_slice=round(float(np.mean([s.seconds for s in scores])), 3),
    )


def pick_default(measured: dict[str, MethodFaithfulness]) -> str:
    """The method with the highest mean score.

    Scores are compared at :data:`RESOLUTION` (a few slices cannot tell smaller differences
    apart); ties go to the higher insertion AUC at the same resolution, then to the
    vocabulary's order, which lists the cheapest methods first. So a model whose output no
    method moves (every score ~0) keeps Grad-CAM rather than a costlier method that won by noise.
    """
    if not measured:
        raise ValueError("nothing was measured")
    order = {m.value: k for k, m in enumerate(CamMethod)}

    def coarse(value: float) -> int:
        return int(round(value / RESOLUTION))

    return str(
        min(
            measured,
            key=lambda m: (
                -coarse(measured[m].score),
                -coarse(measured[m].insertion_auc),
                order.get(str(m), len(order)),
            ),
        )
    )


# ----------------------------------------------------------------------------- measuring


def applicable_methods(manifest: Manifest | None) -> list[str]:
    """Every method a classifier supports: attention rollout only with attention layers."""
    methods = [str(m) for m in MODEL_AGNOSTIC_METHODS]
    if manifest is not None and manifest.attention_layers:
        methods.append(CamMethod.attention.value)
    return methods


def measure_method(
    bundle: Any,
    images: np.ndarray,
    method: str,
    steps: int = STEPS,
    n_random: int = N_RANDOM,
    baseline: str = BASELINE,
) -> list[SliceScore]:
    """One method's map and deletion/insertion test on each image (the predicted class).

    Args:
        bundle: a loaded bundle (or a bare Keras model).
        images: (N, S, S, 1) model inputs in [0, 1].
        method: a :class:`ml.vocab.CamMethod` value.
        steps: deletion/insertion steps.
        n_random: random deletion orders of the score's baseline curve.
        baseline: what deleted pixels become ("blur", "mean", "zero").
    """
    from ml.explain import explain_image

    out = []
    for image in np.asarray(images, dtype=np.float32)[..., 0]:
        t0 = time.perf_counter()
        res = explain_image(
            bundle, image, head=HEAD, method=method, focus="none", faithfulness=True,
            steps=steps, n_random=n_random, baseline=baseline,
        )  # fmt: skip
        faith = res["faithfulness"]
        out.append(
            SliceScore(
                deletion_auc=float(faith["deletion_auc"]),
                insertion_auc=float(faith["insertion_auc"]),
                score=float(faith["score"]),
                empty=float(np.max(res["arrays"]["heatmap"])) <= EMPTY_MAP,
                seconds=time.perf_counter() - t0,
            )
        )
    return out


def benchmark_bundle(
    bundle: Any,
    images: np.ndarray,
    image_ids: Sequence[str],
    subjects: Sequence[str],
    *,
    split: str = "test",
    dataset_hash: str | None = None,
    methods: Sequence[str] | None = None,
    steps: int = STEPS,
    n_random: int = N_RANDOM,
    baseline: str = BASELINE,
    n_boot: int = N_BOOT,
    progress: Callable[[str, str, MethodFaithfulness], None] | None = None,
) -> ExplanationBenchmark:
    """Every method on every image for one classifier; the best mean score is the default.

    Args:
        bundle: a loaded classifier bundle (its manifest says whether attention applies).
        images: (N, S, S, 1) model inputs in [0, 1], S the model's input size.
        image_ids: one id per image (recorded as the benchmark's slices).
        subjects: one subject id per image (the bootstrap's groups).
        split: the split the images come from (recorded).
        dataset_hash: the dataset's hash (recorded).
        methods: the methods to measure; default :func:`applicable_methods`.
        steps: deletion/insertion steps.
        n_random: random deletion orders of the score's baseline curve.
        baseline: what deleted pixels become.
        n_boot: bootstrap resamples of each interval.
        progress: called with (model key, method, its summary) after each method.
    """
    manifest = getattr(bundle, "manifest", None)
    if manifest is not None and manifest.task != "classification":
        raise ValueError(f"{manifest.key} is a {manifest.task} model; the benchmark explains "
                         "classifiers")  # fmt: skip
    if len(images) == 0 or len(images) != len(image_ids) or len(images) != len(subjects):
        raise ValueError("give one image id and one subject per image (and at least one image)")
    measured: dict[str, MethodFaithfulness] = {}
    for method in methods or applicable_methods(manifest):
        measured[method] = summarise(
            measure_method(bundle, images, method, steps, n_random, baseline), subjects, n_boot
        )
        logger.debug("%s %s: %s", getattr(manifest, "key", "model"), method, measured[method])
        if progress is not None:
            progress(getattr(manifest, "key", "model"), method, measured[method])
    return ExplanationBenchmark.model_validate(
        {
            "default_method": pick_default(measured),
            "measured": measured,
            "split": split,
            "dataset_hash": dataset_hash,
            "slices": list(image_ids),
            "subjects": len(set(subjects)),
            "head": HEAD,
            "steps": steps,
            "n_random": n_random,
            "baseline": baseline,
            "ci": f"95% percentile bootstrap over subjects ({n_boot} resamples)",
            "evaluated": _dt.date.today().isoformat(),
        }
    )


def classifier_bundles(models_dir: str | Path, keys: Sequence[str] | None = None) -> list[Path]:
    """The classifier bundle folders under ``models_dir`` (only ``keys`` when given)."""
    from ml.bundle import discover_bundles, read_manifest
    from ml.evaluation.evaluate import resolve_model

    if keys:
        return [resolve_model(k, models_dir) for k in keys]
    return [p for p in discover_bundles(models_dir) if read_manifest(p).task == "classification"]


def run_benchmark(
    bundle_dirs: Sequence[str | Path],
    dataset_dir: str | Path,
    *,
    split: str = "test",
    n_slices: int = N_SLICES,
    steps: int = STEPS,
    n_random: int = N_RANDOM,
    baseline: str = BASELINE,
    n_boot: int = N_BOOT,
    write: bool = False,
    progress: Callable[[str, str, MethodFaithfulness], None] | None = None,
) -> FaithfulnessTable:
    """The benchmark over several bundles on the :func:`select_slices` subset of a split.

    Args:
        bundle_dirs: classifier bundle folders.
        dataset_dir: a folder written by ``spondyscan prepare``.
        split: ``test`` (or ``train``).
        n_slices: size of the subset.
        steps, n_random, baseline, n_boot: see :func:`benchmark_bundle`.
        write: record each model's result in its manifest (``explanation``, atomically; the
            weights and so their hash are untouched).
        progress: see :func:`benchmark_bundle`.
    """
    from ml.bundle import load_bundle, refresh_model_card, update_manifest
    from ml.data.dataset import load_split, resize_images
    from ml.evaluation.evaluate import model_input_size

    t0 = time.perf_counter()
    data = load_split(dataset_dir, split)
    picked = select_slices(data.rows, n_slices)
    if not picked:
        raise ValueError(f"split {split!r} of {dataset_dir} holds no images")
    refs = [
        SliceRef(
            index=i,
            image_id=data.rows[i].get("image_id", str(i)),
            subject_id=str(data.subject_ids[i]),
            source=str(data.sources[i]),
            as_status=int(data.as_status[i]),
        )
        for i in picked
    ]
    models: dict[str, ExplanationBenchmark] = {}
    for path in bundle_dirs:
        bundle = load_bundle(path)
        images = resize_images(data.images[picked], model_input_size(bundle.model))
        record = benchmark_bundle(
            bundle, images, [r.image_id for r in refs], [r.subject_id for r in refs],
            split=split, dataset_hash=data.dataset_hash, steps=steps, n_random=n_random,
            baseline=baseline, n_boot=n_boot, progress=progress,
        )  # fmt: skip
        models[bundle.key] = record
        if write:
            update_manifest(path, {"explanation": record.model_dump(mode="json")})
            refresh_model_card(path)
    return FaithfulnessTable(
        split=split,
        dataset=Path(dataset_dir).name,
        dataset_hash=data.dataset_hash,
        slices=refs,
        steps=steps,
        n_random=n_random,
        baseline=baseline,
        n_boot=n_boot,
        seconds=round(time.perf_counter() - t0, 1),
        machine={
            "cpus": _cpus(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        evaluated=_dt.date.today().isoformat(),
        models=models,
    )


def _cpus() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# ----------------------------------------------------------------------------- report


def _ci(value: float, ci: tuple[float, float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown_table(models: dict[str, ExplanationBenchmark]) -> str:
    """A Markdown table: classifier x method, score / deletion AUC / insertion AUC with their
    95% intervals and the share of empty maps; each model's default method in bold."""
    lines = [
        "| classifier | method | score | deletion AUC (lower better) | insertion AUC | empty |",
        "|---|---|---|---|---|---|",
    ]
    for key, record in models.items():
        for method, m in record.measured.items():
            name = str(method)
            chosen = method == record.default_method
            label = f"**{name}** (default)" if chosen else name
            score = f"**{_ci(m.score, m.score_ci)}**" if chosen else _ci(m.score, m.score_ci)
            lines.append(
                f"| {key} | {label} | {score} | {_ci(m.deletion_auc, m.deletion_auc_ci)} | "
                f"{_ci(m.insertion_auc, m.insertion_auc_ci)} | {m.empty_fraction:.0%} |"
            )
    return "\n".join(lines) + "\n"
