"""How much does the model's confidence depend on the highlighted area? Deletion / insertion AUC.

Deletion: replace the most salient pixels first, in ``steps`` equal steps, with a baseline (a
heavily blurred copy of the image by default) and track the explained class probability; a
faithful map makes it fall fast (low AUC). Insertion: start from the baseline and put the most
salient pixels back first (a faithful map makes it rise fast: high AUC). The same deletion is run
in a few random pixel orders; the score compares the two::

    score = clip((random_deletion_auc - deletion_auc) / random_deletion_auc, -1, 1)

1 means the probability vanishes as soon as the highlighted pixels go, 0 means the map does no
better than random pixels, negative means worse than random. All perturbed images go through one
compiled forward function in ``ceil(n / max_batch)`` calls: the image and the baseline once (every
curve starts or ends there) plus ``steps - 1`` inner steps per curve (deletion, insertion, each
random order, each extra map): ``2 + (steps - 1) * (2 + n_random + n_extra)`` images.

Coarse first (:func:`coarse_rows`): with an even number of steps every curve passes through
half the pixels, so the baseline and each curve's half-way image (``2 + n_random + n_extra``
images) are a complete 2-step run with the same pixel orders. A caller can run those first and
stop when the explained probability barely moves across them (a flat model: the finer steps
could not make the test say more), and otherwise run the rest: the full result is then exactly
the one-shot result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np

from ml.explain.cam_graph import _cached, _signature, resolve_head

BASELINES = ("blur", "mean", "zero")
# The explained probability moving less than this across every image run: the test can't tell.
FLAT_RANGE = 0.01
# Images per forward call. On CPU small chunks run faster than one big batch (the activations
# of a large batch fall out of cache): measured 4-8 best for EfficientNetB0 at 256x256.
DEFAULT_MAX_BATCH = 8
# Models cheaper than this per pass (FLOPs) run in bigger chunks: their activations stay small,
# and fewer calls cost less (harmonized_ordinal, 85 MFLOPs: 22 images in one call 60-65 ms,
# in chunks of 8 72 ms here).
SMALL_MODEL_FLOPS = 0.5e9
SMALL_MODEL_MAX_BATCH = 32


def probe_batch_size(flops: float | None) -> int:
    """Images per forward call for a model of ``flops`` per pass (unknown: the default)."""
    if flops is not None and 0 < flops < SMALL_MODEL_FLOPS:
        return SMALL_MODEL_MAX_BATCH
    return DEFAULT_MAX_BATCH


def make_forward_fn(model: Any, head: str | None):
    """Compiled ``fn(images (N,S,S,C)) -> probabilities (N, K)`` for one head.

    One ``tf.function`` per model computes every head (traced once, cached); segmentation heads
    give (N, 2): [1 - mean foreground probability, mean foreground probability].
    """
    idx, _, _ = resolve_head(model, head)
    shared = _cached(model, ("forward",), lambda: _build_forward_fn(model))
    return lambda images: shared(images)[idx]


def _build_forward_fn(model: Any):
    import weakref

    import keras
    import tensorflow as tf

    model_ref = weakref.ref(model)

    @tf.function(input_signature=[_signature(model)], reduce_retracing=True)
    def fn(images: Any) -> list[Any]:
        probs = []
        model = model_ref()
        if model is None:
            raise RuntimeError("the explained model no longer exists")
        for out in keras.tree.flatten(model(images, training=False)):
            out = tf.cast(out, tf.float32)
            if len(out.shape) != 2:
                fg = tf.reduce_mean(tf.reshape(out, [tf.shape(out)[0], -1]), axis=1)
                out = tf.stack([1.0 - fg, fg], axis=1)
            elif out.shape[-1] == 1:
                out = tf.concat([1.0 - out, out], axis=1)
            probs.append(out)
        return probs

    return fn


def predict_probabilities(
    model: Any, images: np.ndarray, head: str | None, max_batch: int = DEFAULT_MAX_BATCH
) -> np.ndarray:
    """Head probabilities for a batch, in chunks of at most ``max_batch`` images."""
    fn = make_forward_fn(model, head)
    batch = np.asarray(images, dtype=np.float32)
    chunks = [fn(batch[i : i + max_batch]).numpy() for i in range(0, len(batch), max_batch)]
    return np.concatenate(chunks, axis=0).astype(np.float64)


def make_baseline(image: np.ndarray, kind: str = "blur") -> np.ndarray:
    """The image with its detail removed: heavy Gaussian blur (sigma = side / 10), mean, or zero."""
    img = np.asarray(image, dtype=np.float32)
    if kind == "blur":
        sigma = max(1.0, max(img.shape[:2]) / 10.0)
        return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    if kind == "mean":
        return np.full_like(img, float(img.mean()))
    if kind == "zero":
        return np.zeros_like(img)
    raise ValueError(f"unknown baseline {kind!r}; choose one of {BASELINES}")


def _ranks(order: np.ndarray) -> np.ndarray:
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)
    return ranks


def saliency_order(heatmap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices, most salient first; ties (e.g. the zero area) in random order.

    One sort of 64-bit keys: the high half orders the float32 saliency (descending), the low
    half is a random draw that breaks ties (3 ms for 256 x 256 here, against 12 ms for a
    two-key lexsort).
    """
    flat = np.asarray(heatmap, dtype=np.float32).ravel() + np.float32(0.0)  # -0.0 -> 0.0
    bits = flat.view(np.uint32)
    sign = np.uint32(0x80000000)
    ascending = np.where(bits & sign, ~bits, bits | sign)  # the float order, as unsigned ints
    key = (~ascending).astype(np.uint64) << np.uint64(32)
    key |= rng.integers(0, 2**32, size=flat.size, dtype=np.uint64)
    return np.argsort(key)


def _fit(heatmap: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    hm: np.ndarray = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    if hm.ndim == 3:
        hm = hm[..., 0]
    if hm.shape != tuple(shape):
        hm = cv2.resize(hm, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return hm


def _score(random_auc: float, deletion_auc: float) -> float:
    """(random - deletion) / random, clipped to [-1, 1]; 0 when random is ~0."""
    if not np.isfinite(random_auc) or random_auc <= 1e-9:
        return 0.0
    return float(np.clip((random_auc - deletion_auc) / random_auc, -1.0, 1.0))


def auc(curve: np.ndarray) -> float:
    """Trapezoidal area under a curve sampled at equal steps of x in [0, 1]."""
    c = np.asarray(curve, dtype=np.float64)
    if c.size < 2:
        return float(c.mean()) if c.size else 0.0
    return float(((c[1:] + c[:-1]) / 2.0).mean())


def interpret(score: float, random_deletion_auc: float, class_name: str, flat: bool = False) -> str:
    """One plain-language sentence for a faithfulness score.

    Args:
        score: the faithfulness score in [-1, 1].
        random_deletion_auc: AUC of the random-order deletion curve.
        class_name: the explained class, as the user knows it.
        flat: the probability hardly moved under any deletion (the score is then meaningless).
    """
    if flat:
        return (
            f"The model's confidence in '{class_name}' barely changes however the pixels are "
            "removed, so this test cannot tell whether the map shows what the decision rests on."
        )
    if random_deletion_auc < 0.05:
        return (
            f"The model gives '{class_name}' almost no probability to begin with, so this score "
            "says little about the map."
        )
    if score >= 0.5:
        how = "depends strongly on the highlighted area"
    elif score >= 0.2:
        how = "depends moderately on the highlighted area"
    elif score > 0.05:
        how = "depends only weakly on the highlighted area"
    else:
        return (
            f"Removing the highlighted pixels lowers the model's confidence in '{class_name}' no "
            "faster than removing random pixels (score "
            f"{score:.2f}), so this map should not be trusted as the reason for the decision."
        )
    return (
        f"The model's confidence in '{class_name}' {how}: removing the highlighted pixels first "
        f"lowers it {score:.0%} faster (by area under the curve) than removing random pixels."
    )


def deletion_insertion(
    model: Any,
    image: np.ndarray,
    heatmap: np.ndarray,
    head: str | None = "binary_output",
    class_index: int | None = None,
    steps: int = 16,
    baseline: str = "blur",
    n_random: int = 3,
    seed: int = 0,
    max_batch: int = DEFAULT_MAX_BATCH,
    class_names: list[str] | None = None,
    extra_heatmaps: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Deletion and insertion AUC of one heatmap, against a random-order deletion baseline.

    Args:
        model: the explained Keras model.
        image: (S, S) or (S, S, 1) float32 model input in [0, 1].
        heatmap: (S, S) saliency map (any non-negative scale).
        head: explained output (as in :func:`ml.explain.cam_graph.resolve_head`).
        class_index: explained class; ``None`` = the class predicted on the unperturbed image.
        steps: number of equal pixel-fraction steps (``steps + 1`` points per curve).
        baseline: what removed pixels become: "blur", "mean" or "zero".
        n_random: random pixel orders averaged for the baseline curve.
        seed: seeds tie-breaking and the random orders (results are reproducible).
        max_batch: largest batch sent to the model at once.
        class_names: names for the sentence (defaults to "class <i>").
        extra_heatmaps: more maps of the same image (e.g. the focused one) to score in the same
            batch against the same random baseline: ``steps - 1`` more images each.

    Returns:
        dict with deletion_auc, insertion_auc, random_deletion_auc, score (in [-1, 1]), the
        three curves, fractions, class_index, initial probability, steps, baseline, n_forward
        (images run), ``interpretation`` (one sentence) and ``extra`` (name -> deletion_auc,
        score, interpretation for each of ``extra_heatmaps``).
    """
    plan = plan_deletion_insertion(
        image,
        heatmap,
        steps=steps,
        baseline=baseline,
        n_random=n_random,
        seed=seed,
        extra_heatmaps=extra_heatmaps,
    )
    probs = predict_probabilities(model, plan.images, head, max_batch=max_batch)
    return score_deletion_insertion(plan, probs, class_index, class_names)


@dataclass
class Plan:
    """The perturbed images of one deletion/insertion run, and how to read their predictions.

    Building the images needs nothing from the model, so callers can run them however they
    like (e.g. batched with other requests' images) and hand the probabilities back to
    :func:`score_deletion_insertion`.
    """

    images: np.ndarray  # (n, S, S, 1) float32, in the order _split_curves reads
    steps: int
    n_random: int
    baseline: str
    extra_names: list[str]
    n_pixels: int


def plan_deletion_insertion(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    steps: int = 16,
    baseline: str = "blur",
    n_random: int = 3,
    seed: int = 0,
    extra_heatmaps: dict[str, np.ndarray] | None = None,
) -> Plan:
    """Every image :func:`deletion_insertion` runs through the model (arguments as there)."""
    img, hm, extras = _prepared(image, heatmap, extra_heatmaps)
    if steps < 1:
        raise ValueError("steps must be >= 1")
    rng = np.random.default_rng(seed)
    base = make_baseline(img, baseline)
    counts = _counts(steps, img.size)
    x = _perturbed_batch(img, base, hm, list(extras.values()), counts[1:-1], n_random, rng)
    return Plan(x, steps, n_random, baseline, list(extras), img.size)


def _counts(steps: int, n_pixels: int) -> np.ndarray:
    return np.rint(np.linspace(0.0, 1.0, steps + 1) * n_pixels).astype(np.int64)


def score_deletion_insertion(
    plan: Plan,
    probs: np.ndarray,
    class_index: int | None = None,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """The curves, AUCs, score and sentence from the head probabilities of ``plan.images``."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[0] != plan.images.shape[0]:
        raise ValueError(f"{probs.shape[0]} predictions for {plan.images.shape[0]} images")
    steps, n_random = plan.steps, plan.n_random
    ci = int(np.argmax(probs[0])) if class_index is None else int(class_index)
    curves = _split_curves(probs[:, ci], steps, n_random, plan.extra_names)
    name = _class_name(class_names, ci)
    # A model that ignores the perturbations (e.g. untrained) gives flat curves: say so.
    flat = float(np.ptp(probs[:, ci])) < FLAT_RANGE
    rand_auc = _mean_auc(curves.random)
    del_auc = auc(curves.deletion)
    score, sentence = _judge(del_auc, rand_auc, n_random, name, flat)
    return {
        "deletion_auc": del_auc,
        "insertion_auc": auc(curves.insertion),
        "random_deletion_auc": rand_auc,
        "score": score,
        "interpretation": sentence,
        "class_index": ci,
        "initial_probability": float(probs[0, ci]),
        "fractions": (_counts(steps, plan.n_pixels) / plan.n_pixels).tolist(),
        "deletion_curve": curves.deletion.tolist(),
        "insertion_curve": curves.insertion.tolist(),
        "random_deletion_curve": _mean_curve(curves.random, steps + 1).tolist(),
        "steps": steps,
        "baseline": plan.baseline,
        "n_random": n_random,
        "n_forward": int(plan.images.shape[0]),
        "flat": flat,
        "extra": {
            key: _extra_report(curve, rand_auc, n_random, name, flat)
            for key, curve in curves.extra.items()
        },
    }


def has_coarse_step(steps: int) -> bool:
    """Whether a plan of ``steps`` holds a 2-step run (:func:`coarse_rows`): even, at least 4."""
    return steps >= 4 and steps % 2 == 0


def coarse_rows(plan: Plan) -> np.ndarray | None:
    """The rows of ``plan.images`` that make the 2-step run inside it, or None.

    With an even number of steps >= 4 the inner step ``steps / 2`` of every curve is the same
    pixel count as a 2-step run's single inner step (same orders, same images), so the image,
    the baseline and those half-way images score exactly like ``steps=2`` with the same seed.
    """
    if not has_coarse_step(plan.steps):
        return None
    inner, half = plan.steps - 1, plan.steps // 2 - 1
    curves = 2 + plan.n_random + len(plan.extra_names)
    return np.array([0, 1, *(2 + c * inner + half for c in range(curves))], dtype=np.int64)


def flat_at_coarse_note(class_names: list[str] | None, class_index: int) -> str:
    """The sentence of a score that stopped at its coarse step because nothing moved."""
    class_name = _class_name(class_names, class_index)
    return (
        f"The model's confidence in '{class_name}' moved by less than {FLAT_RANGE} with half of "
        "the highlighted pixels, half of random pixels or all of the image's detail removed, so "
        "this test cannot tell whether the map shows what the decision rests on (the finer "
        "steps were not run)."
    )


def _class_name(class_names: list[str] | None, index: int) -> str:
    """The explained class as the user knows it ("class <i>" without names)."""
    return class_names[index] if class_names and index < len(class_names) else f"class {index}"


class _Curves(NamedTuple):
    """The probability curves of one :func:`deletion_insertion` run, ``steps + 1`` points each."""

    deletion: np.ndarray
    random: np.ndarray | None  # (n_random, steps + 1); None without random orders
    insertion: np.ndarray
    extra: dict[str, np.ndarray]  # the deletion curve of each extra map


def _prepared(
    image: np.ndarray, heatmap: np.ndarray, extra_heatmaps: dict[str, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(S, S) float32 image, and every map fitted onto it."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img[..., 0]
    hm = _fit(heatmap, img.shape)
    extras = {k: _fit(v, img.shape) for k, v in (extra_heatmaps or {}).items()}
    return img, hm, extras


def _perturbed_batch(
    img: np.ndarray,
    base: np.ndarray,
    heatmap: np.ndarray,
    extra_maps: list[np.ndarray],
    inner: np.ndarray,
    n_random: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Every image the curves need, (n, S, S, 1) float32, in the order :func:`_split_curves` reads.

    ``inner`` holds the pixel counts of the inner steps: every curve starts at the image and
    ends at the baseline (or back), so those two are in the batch once, first.
    """
    flat_img, flat_base = img.ravel(), base.ravel()

    def deleted(ranks: np.ndarray) -> list[np.ndarray]:
        # rank < count  <=>  the pixel is among the first `count` in that order.
        return [np.where(ranks < c, flat_base, flat_img) for c in inner]

    salient = _ranks(saliency_order(heatmap, rng))
    # Shared end points once, then the inner steps of each curve:
    # deletion, n_random random deletions, insertion, one deletion per extra map.
    # Draw from ``rng`` in this order (ties, random orders, extra maps): same seed, same result.
    batch = [flat_img, flat_base, *deleted(salient)]
    for _ in range(n_random):
        batch += deleted(_ranks(rng.permutation(img.size)))
    batch += [np.where(salient < c, flat_img, flat_base) for c in inner]
    for extra_hm in extra_maps:
        batch += deleted(_ranks(saliency_order(extra_hm, rng)))
    return np.stack(batch).reshape(-1, *img.shape, 1).astype(np.float32, copy=False)


def _split_curves(p: np.ndarray, steps: int, n_random: int, extra_names: list[str]) -> _Curves:
    """The curves from the explained class's probability on each image of the batch."""
    m = steps - 1
    p_img, p_base = p[0], p[1]
    mids = p[2:].reshape(-1, m) if m else np.zeros((2 + n_random + len(extra_names), 0))

    def deletion_curve(row: int) -> np.ndarray:
        return np.concatenate([[p_img], mids[row], [p_base]])

    random_curves = np.stack([deletion_curve(1 + r) for r in range(n_random)]) if n_random else None
    return _Curves(
        deletion=deletion_curve(0),
        random=random_curves,
        insertion=np.concatenate([[p_base], mids[1 + n_random], [p_img]]),
        extra={k: deletion_curve(2 + n_random + j) for j, k in enumerate(extra_names)},
    )


def _mean_auc(curves: np.ndarray | None) -> float:
    """Mean AUC of the random-order curves; NaN without any."""
    if curves is None:
        return float("nan")
    return float(np.mean([auc(c) for c in curves]))


def _mean_curve(curves: np.ndarray | None, n: int) -> np.ndarray:
    return curves.mean(axis=0) if curves is not None else np.zeros(n)


def _judge(
    deletion_auc: float, random_auc: float, n_random: int, class_name: str, flat: bool
) -> tuple[float, str]:
    """Score and sentence of one deletion AUC; without random orders the score is 0."""
    score = _score(random_auc, deletion_auc) if n_random else 0.0
    return score, interpret(score, random_auc if n_random else 1.0, class_name, flat)


def _extra_report(
    curve: np.ndarray, random_auc: float, n_random: int, class_name: str, flat: bool
) -> dict[str, Any]:
    e_auc = auc(curve)
    e_score, sentence = _judge(e_auc, random_auc, n_random, class_name, flat)
    return {
        "deletion_auc": e_auc,
        "score": e_score,
        "interpretation": sentence,
        "deletion_curve": curve.tolist(),
    }
