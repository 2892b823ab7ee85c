"""Plots written as PNG (matplotlib, Agg): confusion matrices and training curves."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)
    return buf.getvalue()


def confusion_matrix_png(matrix: Sequence[Sequence[int]], labels: list[str], title: str) -> bytes:
    """A labelled confusion matrix (rows true, columns predicted) with counts and row shares."""
    plt = _figure()
    cm = np.asarray(matrix, dtype=float)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.1 * len(labels) + 1.5))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title + "\n(research use only)", fontsize=10)
    for i in range(len(labels)):
        for j in range(len(labels)):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(cm[i, j])}\n{share[i, j]:.0%}", ha="center", va="center",
                    color=color, fontsize=8)  # fmt: skip
    return _png(fig)


def curves_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """Loss and metric curves per epoch (train vs validation), stage changes marked."""
    plt = _figure()
    first = rows[0] if rows else {}
    keys = [k for k in first if not k.startswith("val_") and f"val_{k}" in first]
    metrics = [k for k in keys if k != "loss"]
    panels = ["loss"] + metrics[:3] if "loss" in keys else metrics[:4]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.4))
    axes = np.atleast_1d(axes)
    epochs = [int(r["epoch"]) for r in rows]
    changes = [r["epoch"] for a, r in zip(rows, rows[1:], strict=False) if r["stage"] != a["stage"]]
    for ax, key in zip(axes, panels, strict=False):
        ax.plot(epochs, [float(r[key]) for r in rows], label="train")
        ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], label="validation")
        for c in changes:
            ax.axvline(c - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title + " (research use only)", fontsize=10)
    return _png(fig)


def reliability_png(raw: Any, scaled: Any, title: str) -> bytes:
    """A reliability diagram: accuracy against confidence per bin, raw and temperature-scaled.

    Args:
        raw: :class:`ml.calibration.Reliability` of the raw probabilities.
        scaled: the same after temperature scaling.
        title: figure title.
    """
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    centres = (raw.edges[:-1] + raw.edges[1:]) / 2
    width = raw.edges[1] - raw.edges[0]
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    for rel, label, colour, shift in (
        (raw, f"raw (ECE {raw.ece:.3f})", "#d95f02", -width / 4),
        (scaled, f"scaled (ECE {scaled.ece:.3f})", "#1b9e77", width / 4),
    ):
        used = rel.count > 0
        ax.bar(centres[used] + shift, rel.accuracy[used], width=width / 2, color=colour,
               alpha=0.8, label=label)  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (probability of the predicted class)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)
