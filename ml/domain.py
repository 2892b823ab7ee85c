"""Applicability domain: is this image like the slices the models were trained on?

A reference distribution is fitted on the training split's images (``spondyscan domain fit``):
image features (the slice's layout at 16x16, its grey-level histogram, the histograms of
gradient orientation and strength) are standardised, projected on their principal components,
and two distances are measured: the Mahalanobis distance inside the principal subspace
(shrunk covariance) and the residual outside it. Each is divided by its threshold (a high
quantile of the training images' own distances, with a margin); the larger ratio is the
``score``, and a slice is in the domain when it is at most 1. Pure NumPy at scoring time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

FEATURE_VERSION = 1
REFERENCE_FILE = "domain_reference.npz"


def image_features(image: np.ndarray) -> np.ndarray:
    """The feature vector of one preprocessed slice ((S, S) float in [0, 1])."""
    x = np.asarray(image, dtype=np.float32)
    layout = cv2.resize(x, (16, 16), interpolation=cv2.INTER_AREA).ravel()
    grey = np.histogram(x, bins=16, range=(0.0, 1.0))[0] / x.size
    gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.hypot(gx, gy)
    angle = np.arctan2(gy, gx) % np.pi
    orientation = np.histogram(angle, bins=8, range=(0.0, np.pi), weights=magnitude)[0]
    orientation = orientation / (float(magnitude.sum()) + 1e-6)
    strength = np.histogram(magnitude, bins=8, range=(0.0, 2.0))[0] / x.size
    return np.concatenate([layout, grey, orientation, strength]).astype(np.float64)


@dataclass
class DomainScore:
    score: float
    distance: float  # Mahalanobis distance / its threshold
    residual: float  # residual outside the principal subspace / its threshold

    @property
    def in_domain(self) -> bool:
        return self.score <= 1.0


@dataclass
class DomainReference:
    """The fitted reference distribution (see the module docstring)."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # (k, d) principal axes of the standardised features
    centre: np.ndarray  # (k,) mean of the projections
    precision: np.ndarray  # (k, k) shrunk inverse covariance of the projections
    distance_threshold: float
    residual_threshold: float
    info: dict[str, Any] = field(default_factory=dict)

    def _parts(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = (np.atleast_2d(features) - self.mean) / self.scale
        projected = z @ self.components.T
        residual = np.linalg.norm(z - projected @ self.components, axis=1)
        d = projected - self.centre
        distance = np.sqrt(np.einsum("ij,jk,ik->i", d, self.precision, d))
        return distance, residual

    def score_features(self, features: np.ndarray) -> list[DomainScore]:
        distance, residual = self._parts(features)
        out = []
        for dist, res in zip(distance, residual, strict=True):
            a, b = float(dist / self.distance_threshold), float(res / self.residual_threshold)
            out.append(DomainScore(max(a, b), a, b))
        return out

    def score(self, image: np.ndarray) -> DomainScore:
        """The score of one preprocessed slice."""
        return self.score_features(image_features(image)[None])[0]

    def to_bytes(self) -> bytes:
        import json

        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            mean=self.mean,
            scale=self.scale,
            components=self.components,
            centre=self.centre,
            precision=self.precision,
            thresholds=np.asarray([self.distance_threshold, self.residual_threshold]),
            info=np.frombuffer(json.dumps(self.info).encode(), dtype=np.uint8),
        )
        return buf.getvalue()

    @classmethod
    def load(cls, path: str | Path) -> DomainReference:
        import json

        with np.load(Path(path), allow_pickle=False) as z:
            info = json.loads(bytes(z["info"]).decode())
            if info.get("feature_version") != FEATURE_VERSION:
                raise ValueError(
                    f"{path}: domain reference of feature version {info.get('feature_version')}; "
                    f"this code computes version {FEATURE_VERSION} (refit it)"
                )
            return cls(
                mean=z["mean"],
                scale=z["scale"],
                components=z["components"],
                centre=z["centre"],
                precision=z["precision"],
                distance_threshold=float(z["thresholds"][0]),
                residual_threshold=float(z["thresholds"][1]),
                info=info,
            )


def fit_reference(
    images: np.ndarray,
    *,
    components: int = 24,
    quantile: float = 0.995,
    margin: float = 1.25,
    info: dict[str, Any] | None = None,
) -> DomainReference:
    """Fit the reference distribution on training slices.

    Args:
        images: (N, S, S) preprocessed training slices.
        components: principal components kept.
        quantile: the training images' distance quantile the thresholds start from.
        margin: factor on that quantile (room for slices of new subjects).
        info: provenance to store (dataset hash, split, counts).
    """
    from sklearn.covariance import LedoitWolf

    features = np.stack([image_features(img) for img in images])
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    z = (features - mean) / scale
    k = min(components, z.shape[0] - 1, z.shape[1])
    _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    axes = vt[:k]
    projected = z @ axes.T
    lw = LedoitWolf().fit(projected)
    ref = DomainReference(
        mean=mean,
        scale=scale,
        components=axes,
        centre=lw.location_,
        precision=lw.precision_,
        distance_threshold=1.0,
        residual_threshold=1.0,
    )
    distance, residual = ref._parts(features)
    ref.distance_threshold = float(np.quantile(distance, quantile) * margin)
    ref.residual_threshold = float(np.quantile(residual, quantile) * margin)
    ref.info = {
        "feature_version": FEATURE_VERSION,
        "images": int(len(images)),
        "components": int(k),
        "quantile": quantile,
        "margin": margin,
        **(info or {}),
    }
    return ref


def assess(
    score: DomainScore | None,
    *,
    modality: str | None = None,
    sagittal: bool | None = None,
    column_found: bool | None = None,
) -> dict[str, Any]:
    """The ``domain`` block of a result: in the domain or not, the score, and why.

    Args:
        score: the reference score (None when no reference is installed).
        modality: the DICOM modality, when the image had a header.
        sagittal: whether the series is sagittal, when known.
        column_found: whether the segmenter found structures (reported, not decisive).
    """
    reasons: list[str] = []
    in_domain = True
    if modality and modality != "MR":
        in_domain = False
        reasons.append(f"the image is {modality}, the models were trained on MR")
    if sagittal is False:
        in_domain = False
        reasons.append("the image is not sagittal")
    if score is None:
        reasons.append("no reference distribution is installed: only the header was checked")
    elif not score.in_domain:
        in_domain = False
        reasons.append(
            f"its image statistics are far from the training slices (score {score.score:.2f} > 1)"
        )
    if column_found is False:
        reasons.append("the segmenter found no vertebral structures")
    return {
        "in_domain": in_domain,
        "score": round(score.score, 4) if score is not None else None,
        "reasons": reasons,
    }
