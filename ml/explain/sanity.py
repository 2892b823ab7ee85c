"""Sanity check of an explanation method: model parameter randomisation (Adebayo et al., 2018).

If a saliency map barely changes when the trained weights are replaced by random ones, it shows
the image (edges, bright areas), not what the model learned, and should not be read as the
reason for a decision. :func:`parameter_randomisation` compares the maps of a trained model with
those of a randomised copy of the same architecture (every layer re-initialised by its own
initialiser, seeded) on the same images and reports how similar they are.

Similarity measures, per image (maps of any non-negative scale):

* Spearman rank correlation of the two maps (0 when either map is constant: nothing to rank);
* the overlap (intersection over union) of their top-``top_fraction`` pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

MapFn = Callable[[Any, np.ndarray], np.ndarray]


@dataclass
class SanityReport:
    """How alike the trained and the randomised model's maps are, per image and on average.

    Attributes:
        spearman: (N,) rank correlation of each image's two maps, in [-1, 1].
        top_overlap: (N,) IoU of the two maps' top pixels, in [0, 1].
        top_fraction: the fraction of pixels counted as "top".
    """

    spearman: np.ndarray
    top_overlap: np.ndarray
    top_fraction: float

    @property
    def mean_spearman(self) -> float:
        return float(np.mean(self.spearman))

    @property
    def mean_top_overlap(self) -> float:
        return float(np.mean(self.top_overlap))

    def as_dict(self) -> dict[str, float]:
        return {
            "mean_spearman": round(self.mean_spearman, 4),
            "mean_top_overlap": round(self.mean_top_overlap, 4),
            "top_fraction": self.top_fraction,
        }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps; 0 when either is constant."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if np.ptp(x) <= 1e-12 or np.ptp(y) <= 1e-12:
        return 0.0
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def top_overlap(a: np.ndarray, b: np.ndarray, fraction: float = 0.2) -> float:
    """IoU of the ``fraction`` most salient pixels of two maps (0 when either is empty)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.max() <= 0 or y.max() <= 0:
        return 0.0
    k = max(1, int(round(fraction * x.size)))
    top_x = np.zeros(x.size, bool)
    top_y = np.zeros(y.size, bool)
    top_x[np.argsort(-x, kind="stable")[:k]] = True
    top_y[np.argsort(-y, kind="stable")[:k]] = True
    return float((top_x & top_y).sum() / (top_x | top_y).sum())


def randomised_copy(build: Callable[[], Any], seed: int = 0) -> Any:
    """A fresh, seeded, randomly initialised model from ``build()`` (the same architecture)."""
    import keras

    keras.utils.set_random_seed(seed)
    return build()


def compare_maps(
    trained: np.ndarray, randomised: np.ndarray, top_fraction: float = 0.2
) -> SanityReport:
    """Similarity of two stacks of maps (N, H, W), image by image."""
    if trained.shape != randomised.shape:
        raise ValueError(f"map shapes differ: {trained.shape} vs {randomised.shape}")
    return SanityReport(
        spearman=np.asarray([spearman(a, b) for a, b in zip(trained, randomised, strict=True)]),
        top_overlap=np.asarray(
            [top_overlap(a, b, top_fraction) for a, b in zip(trained, randomised, strict=True)]
        ),
        top_fraction=top_fraction,
    )


def parameter_randomisation(
    model: Any,
    build: Callable[[], Any],
    images: np.ndarray,
    explain: MapFn,
    *,
    seed: int = 0,
    top_fraction: float = 0.2,
) -> SanityReport:
    """Maps of ``model`` against those of a randomised copy, on the same images.

    Args:
        model: the trained model.
        build: builds the same architecture, randomly initialised.
        images: (N, S, S, 1) float32 model inputs.
        explain: ``explain(model, images) -> (N, S, S)`` maps (the method under test).
        seed: seeds the random initialisation.
        top_fraction: share of pixels compared by :func:`top_overlap`.
    """
    trained = np.asarray(explain(model, images), dtype=np.float32)
    random_model = randomised_copy(build, seed)
    randomised = np.asarray(explain(random_model, images), dtype=np.float32)
    return compare_maps(trained, randomised, top_fraction)
