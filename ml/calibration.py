"""Calibration: reliability, expected calibration error, and temperature scaling.

A classifier's probabilities are calibrated when, of the images it gives 80 % to, about 80 % are
right. Temperature scaling (Guo et al., 2017) divides each head's log-probabilities by one number
``T`` fitted on held-out data (the training run's own validation subjects), which changes the
confidence but never the predicted class. ``T`` lives in the bundle's manifest and serving
applies it to every probability it reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-7
# Temperatures searched (log-uniform bounds): beyond these the model is broken, not miscalibrated.
T_MIN, T_MAX = 0.05, 20.0


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (..., K) re-scaled by ``softmax(log p / T)``; T = 1 returns them unchanged.

    Args:
        probs: probabilities along the last axis.
        temperature: T > 0; above 1 softens, below 1 sharpens.
    """
    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return p
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, not {temperature}")
    logits = np.log(np.clip(p, _EPS, 1.0)) / float(temperature)
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T that minimises the NLL of ``labels`` under ``apply_temperature(probs, T)``.

    Args:
        probs: (N, K) held-out probabilities.
        labels: (N,) true classes.
    """
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        raise ValueError("no held-out images to fit a temperature on")
    res = minimize_scalar(
        lambda log_t: nll(apply_temperature(probs, float(np.exp(log_t))), labels),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(res.x))


@dataclass
class Reliability:
    """A reliability diagram's data: per confidence bin, mean confidence, accuracy and count."""

    edges: np.ndarray  # (bins + 1,)
    confidence: np.ndarray  # (bins,) NaN for empty bins
    accuracy: np.ndarray  # (bins,) NaN for empty bins
    count: np.ndarray  # (bins,)

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean |accuracy - confidence|."""
        n = self.count.sum()
        if n == 0:
            return 0.0
        used = self.count > 0
        gaps = np.abs(self.accuracy[used] - self.confidence[used])
        return float((gaps * self.count[used]).sum() / n)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> Reliability:
    """Top-label reliability: the predicted class's probability against being right."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    conf = p.max(axis=1) if len(p) else np.zeros(0)
    right = (p.argmax(axis=1) == y).astype(np.float64) if len(p) else np.zeros(0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        confidence = np.bincount(which, weights=conf, minlength=bins) / count
        accuracy = np.bincount(which, weights=right, minlength=bins) / count
    return Reliability(edges, confidence, accuracy, count)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error (top label, equal-width bins)."""
    return reliability(probs, labels, bins).ece
