"""Feature-rule labels (the design's rule, versions 1 and 2), fitted on the training split.

These labels are computed from image statistics, not given by radiologists. They are a
stand-in for clinical labels the public data does not have, and every output says so.

Features (on the preprocessed 256x256 uint8 slice, the PNG written to the dataset):

- ``mean``: ``np.mean(img)``; ``lower_mean``: mean of the lower half (rows ``H//2:``);
- ``std``: ``np.std(img)`` (texture); ``edge_density``: share of ``cv2.Canny(img, 50, 150)``
  pixels.

Rule v1: brightness = mean, texture = std, edges = edge density. AS+ when brightness is below
its 45th percentile and texture above its 55th; stage from edge density at the 30th/50th/70th
percentiles (Normal / Early / Moderate / Advanced), for every image, as the design's first
version did (it did not tie the stage to the AS status).

Rule v2 (default): brightness = 0.4 x mean + 0.6 x lower-half mean; combined =
0.3 x brightness + 0.4 x texture + 0.3 x edge density; AS+ when combined is above its 52nd
percentile; among AS+, Advanced above the 85th, Moderate above the 70th, Early above the 60th,
else Normal; AS- are Normal.

**Scale.** The design weights features of very different units (grey levels ~0-255, edge share
~0-0.3). Here every feature is first mapped to its *mid-rank percentile* within its
normalisation group of training images: ``r(x) = (#{train < x} + #{train <= x}) / (2 n)``, a
number in [0, 1]. Ranks make the weights mean "relative importance", are robust to outliers, and
are invariant to any monotone intensity change of a scanner, which is what per-source
normalisation is for. The percentile thresholds are then taken over the pooled training
combined scores. The sorted training values of each group are saved, so any later image is
scored exactly as the training images were.

**Normalisation groups.** ``per_source`` (default): one group per source with at least
``MIN_GROUP_SIZE`` training images; other images (small or unseen sources) use the pooled
group ``"*"``. ``global``: every image uses ``"*"``: the design's version, whose labels follow
the scanner (on the real data all ``chu`` and ``zukic`` slices come out AS-).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

AS_STATUS_NAMES = ["negative", "positive"]
STAGE_NAMES = ["Normal", "Early", "Moderate", "Advanced"]
RAW_FEATURES = ("mean", "lower_mean", "std", "edge_density")
RULE_VERSIONS = ("v1", "v2")
NORMALIZATIONS = ("per_source", "global")
GLOBAL_GROUP = "*"
MIN_GROUP_SIZE = 8
CANNY_THRESHOLDS = (50, 150)

V1: dict[str, Any] = {"brightness_pct": 45.0, "texture_pct": 55.0, "stage_pct": [30.0, 50.0, 70.0]}
V2: dict[str, Any] = {
    "brightness_weights": {"mean": 0.4, "lower_mean": 0.6},
    "combined_weights": {"brightness": 0.3, "texture": 0.4, "edge_density": 0.3},
    "positive_pct": 52.0,
    "stage_pct": [60.0, 70.0, 85.0],
}
PROVENANCE = (
    "Labels computed from image features by a fitted rule (brightness, texture, edge density), "
    "not by radiologists; research use only, not a diagnosis."
)


def label_source_name(version: str) -> str:
    """The ``label_source`` column value for a rule version (``feature_rule_v2``)."""
    return f"feature_rule_{version}"


def rule_slice(image: np.ndarray) -> np.ndarray:
    """The 8-bit slice the rule measures.

    Args:
        image: (H, W) or (H, W, C) slice; uint8 as it is, any other dtype read as [0, 1]
            and put on the 0-255 scale (``round(x * 255)``, clipped).

    Returns:
        (H, W) uint8 (the first channel of a multi-channel input).
    """
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., 0]
    if img.dtype != np.uint8:
        img = np.clip(np.rint(np.asarray(img, np.float64) * 255.0), 0, 255).astype(np.uint8)
    return img


def edge_map(img: np.ndarray) -> np.ndarray:
    """The rule's edge map of an 8-bit slice: ``cv2.Canny(img, 50, 150) > 0`` as bool (H, W)."""
    import cv2

    return cv2.Canny(img, *CANNY_THRESHOLDS) > 0


def image_features(image: np.ndarray) -> dict[str, float]:
    """Raw rule features of one preprocessed slice.

    Args:
        image: (H, W) uint8 slice (float input in [0, 1] is scaled to uint8 first).

    Returns:
        ``mean``, ``lower_mean``, ``std`` and ``edge_density`` as Python floats.
    """
    img = rule_slice(image)
    edges = edge_map(img)
    h = img.shape[0]
    return {
        "mean": float(np.mean(img)),
        "lower_mean": float(np.mean(img[h // 2 :])),
        "std": float(np.std(img)),
        "edge_density": float(np.count_nonzero(edges)) / float(edges.size),
    }


def rule_features(raw: Mapping[str, float], version: str) -> dict[str, float]:
    """The rule's three inputs (brightness, texture, edge_density) from raw features."""
    if version == "v1":
        brightness = raw["mean"]
    elif version == "v2":
        w = V2["brightness_weights"]
        brightness = w["mean"] * raw["mean"] + w["lower_mean"] * raw["lower_mean"]
    else:
        raise ValueError(f"unknown rule version {version!r}; expected v1 or v2")
    return {"brightness": float(brightness), "texture": float(raw["std"]),
            "edge_density": float(raw["edge_density"])}  # fmt: skip


RULE_INPUTS = ("brightness", "texture", "edge_density")


def midrank(sorted_values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Mid-rank percentile of ``x`` among ``sorted_values``, in [0, 1]."""
    ref = np.asarray(sorted_values, dtype=np.float64)
    xs = np.asarray(x, dtype=np.float64)
    lo = np.searchsorted(ref, xs, side="left")
    hi = np.searchsorted(ref, xs, side="right")
    return (lo + hi) / (2.0 * ref.size)


@dataclass
class LabelRule:
    """A fitted feature rule: normalisation groups and percentile thresholds."""

    version: str
    normalization: str
    groups: dict[str, dict[str, list[float]]]
    thresholds: dict[str, Any]
    n_fit: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def label_source(self) -> str:
        return label_source_name(self.version)

    def group_for(self, source: str) -> str:
        """Which normalisation group scores an image of ``source``."""
        if self.normalization == "per_source" and source in self.groups:
            return source
        return GLOBAL_GROUP

    def normalized(
        self, raw: Sequence[Mapping[str, float]], sources: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Rank-normalised rule inputs, (N,) arrays keyed by RULE_INPUTS."""
        n = len(raw)
        out = {k: np.zeros(n, dtype=np.float64) for k in RULE_INPUTS}
        feats = [rule_features(r, self.version) for r in raw]
        groups = [self.group_for(s) for s in sources]
        for g in sorted(set(groups)):
            idx = np.array([i for i, gi in enumerate(groups) if gi == g], dtype=np.int64)
            for k in RULE_INPUTS:
                vals = np.array([feats[i][k] for i in idx], dtype=np.float64)
                out[k][idx] = midrank(np.asarray(self.groups[g][k]), vals)
        return out

    def score(self, raw: Sequence[Mapping[str, float]], sources: Sequence[str]) -> np.ndarray:
        """v2 combined score (v1: the texture-minus-brightness margin, for reporting only)."""
        z = self.normalized(raw, sources)
        if self.version == "v2":
            w = V2["combined_weights"]
            return np.asarray(sum(w[k] * z[k] for k in RULE_INPUTS), dtype=np.float64)
        return z["texture"] - z["brightness"]

    def apply(
        self, raw: Sequence[Mapping[str, float]], sources: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Label images: (as_status (N,) int32, stage (N,) int32)."""
        if len(raw) != len(sources):
            raise ValueError("raw features and sources differ in length")
        if not raw:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        z = self.normalized(raw, sources)
        t = self.thresholds
        if self.version == "v1":
            status = (z["brightness"] < t["brightness"]) & (z["texture"] > t["texture"])
            e = z["edge_density"]
            stage = sum((e > s).astype(np.int32) for s in t["stage"])
            return status.astype(np.int32), np.asarray(stage, np.int32)
        combined = self.score(raw, sources)
        status = combined > t["positive"]
        stage = sum((combined > s).astype(np.int32) for s in t["stage"])
        stage = np.where(status, stage, 0)
        return status.astype(np.int32), np.asarray(stage, np.int32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the content of ``label_rule.json``)."""
        return {
            "version": self.version,
            "label_source": self.label_source,
            "normalization": self.normalization,
            "scale": "midrank percentile within the normalisation group (training images)",
            "features": {
                "mean": "np.mean(img) of the 256x256 uint8 slice",
                "lower_mean": "mean of rows H//2: (lower half)",
                "std": "np.std(img) (texture)",
                "edge_density": "share of cv2.Canny(img, 50, 150) pixels",
            },
            "definition": V1 if self.version == "v1" else V2,
            "thresholds": self.thresholds,
            "min_group_size": MIN_GROUP_SIZE,
            "n_fit": self.n_fit,
            "fitted_on": "train split",
            "provenance": PROVENANCE,
            "research_use_only": True,
            "meta": self.meta,
            "groups": self.groups,
        }

    def save(self, path: str | Path) -> Path:
        """Write the rule as JSON (floats round-trip exactly)."""
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        return p

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelRule:
        try:
            return cls(
                version=str(data["version"]),
                normalization=str(data["normalization"]),
                groups={g: {k: list(v) for k, v in d.items()} for g, d in data["groups"].items()},
                thresholds=dict(data["thresholds"]),
                n_fit=int(data.get("n_fit", 0)),
                meta=dict(data.get("meta", {})),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a label rule: missing or bad field ({exc})") from exc


def load_rule(path: str | Path) -> LabelRule:
    """Read ``label_rule.json`` back into a :class:`LabelRule`."""
    return LabelRule.from_dict(json.loads(Path(path).read_text()))


def fit_rule(
    raw: Sequence[Mapping[str, float]],
    sources: Sequence[str],
    version: str = "v2",
    normalization: str = "per_source",
) -> LabelRule:
    """Fit the rule's normalisation groups and thresholds on (training) images.

    Args:
        raw: raw features per image (:func:`image_features`).
        sources: source name per image (the per-source normalisation group).
        version: ``"v1"`` or ``"v2"``.
        normalization: ``"per_source"`` or ``"global"``.

    Returns:
        The fitted rule; ``rule.apply(raw, sources)`` labels any images.
    """
    if version not in RULE_VERSIONS:
        raise ValueError(f"unknown rule version {version!r}; expected one of {RULE_VERSIONS}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; expected {NORMALIZATIONS}")
    if len(raw) == 0:
        raise ValueError("cannot fit a label rule on zero images")
    if len(raw) != len(sources):
        raise ValueError("raw features and sources differ in length")
    feats = [rule_features(r, version) for r in raw]

    def group_stats(idx: list[int]) -> dict[str, list[float]]:
        return {k: sorted(float(feats[i][k]) for i in idx) for k in RULE_INPUTS}

    groups = {GLOBAL_GROUP: group_stats(list(range(len(raw))))}
    counts: dict[str, int] = {}
    for s in sources:
        counts[s] = counts.get(s, 0) + 1
    if normalization == "per_source":
        for s in sorted(counts):
            if counts[s] >= MIN_GROUP_SIZE and s != GLOBAL_GROUP:
                groups[s] = group_stats([i for i, si in enumerate(sources) if si == s])
    rule = LabelRule(version, normalization, groups, thresholds={}, n_fit=len(raw))
    rule.meta = {"train_images_per_source": dict(sorted(counts.items()))}
    z = rule.normalized(raw, sources)
    if version == "v1":
        rule.thresholds = {
            "brightness": float(np.percentile(z["brightness"], V1["brightness_pct"])),
            "texture": float(np.percentile(z["texture"], V1["texture_pct"])),
            "stage": [float(np.percentile(z["edge_density"], q)) for q in V1["stage_pct"]],
        }
    else:
        combined = rule.score(raw, sources)
        rule.thresholds = {
            "positive": float(np.percentile(combined, V2["positive_pct"])),
            "stage": [float(np.percentile(combined, q)) for q in V2["stage_pct"]],
        }
    return rule
