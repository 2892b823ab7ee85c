"""Training data: subject-disjoint validation split, resizing, augmentation, oversampling.

Batches come from a ``keras.utils.PyDataset`` built on NumPy/OpenCV, so the pipeline is the same
on every Keras backend. Randomness is drawn from generators seeded by (seed, epoch, batch), so a
run is reproducible whatever order Keras asks for batches in.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import keras
import numpy as np

AUGMENT_KEYS = {"shift", "rotate", "scale", "brightness", "contrast", "gamma", "gain", "p"}


def augment_pair(
    image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, spec: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply one random affine (and intensity) transform to an image and its mask alike.

    Sagittal anatomy has a front and a back, so there are no flips: small shifts, rotations and
    scaling only, with reflected borders, and optional gain/brightness/contrast/gamma jitter on
    the image (never on the mask).

    Args:
        image: (S, S) or (S, S, 1) float32 in [0, 1].
        mask: matching binary mask, or None.
        rng: random generator.
        spec: ``shift`` (fraction of the side), ``rotate`` (degrees), ``scale`` (fraction),
            ``brightness`` (additive), ``contrast`` (fraction), ``gamma`` (fraction), ``gain``
            (multiplicative, log-uniform in ``exp(+-gain)``: darker and brighter scanners),
            ``p`` (probability to transform at all).
    """
    if rng.random() >= float(spec.get("p", 1.0)):
        return image, mask
    img = image[..., 0] if image.ndim == 3 else image
    size = img.shape[0]
    angle = rng.uniform(-1, 1) * float(spec.get("rotate", 0.0))
    scale = 1.0 + rng.uniform(-1, 1) * float(spec.get("scale", 0.0))
    shift = float(spec.get("shift", 0.0)) * size
    tx, ty = rng.uniform(-shift, shift, size=2)
    matrix = cv2.getRotationMatrix2D((size / 2.0, size / 2.0), angle, scale)
    matrix[:, 2] += (tx, ty)
    geometric = angle != 0 or scale != 1.0 or tx != 0 or ty != 0
    if geometric:
        img = cv2.warpAffine(
            img, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
    out_mask = mask
    if mask is not None and geometric:
        m = mask[..., 0] if mask.ndim == 3 else mask
        m = cv2.warpAffine(
            m, matrix, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101
        )
        out_mask = m[..., None] if mask.ndim == 3 else m
    if spec.get("gain"):
        img = img * float(np.exp(rng.uniform(-1, 1) * float(spec["gain"])))
    if spec.get("gamma"):
        img = np.power(np.clip(img, 0, 1), 1.0 + rng.uniform(-1, 1) * float(spec["gamma"]))
    if spec.get("contrast"):
        mean = float(img.mean())
        img = (img - mean) * (1.0 + rng.uniform(-1, 1) * float(spec["contrast"])) + mean
    if spec.get("brightness"):
        img = img + rng.uniform(-1, 1) * float(spec["brightness"])
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return (img[..., None] if image.ndim == 3 else img), out_mask


def oversample_indices(labels: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Indices where every class appears at least ``ratio`` x the largest class count.

    Originals are all kept; minority classes are topped up by sampling with replacement.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    target = int(math.ceil(counts.max() * float(ratio)))
    parts = [np.arange(len(labels))]
    for cls, count in zip(classes, counts, strict=True):
        if count < target:
            members = np.flatnonzero(labels == cls)
            parts.append(rng.choice(members, size=target - count, replace=True))
    return np.concatenate(parts)


class BatchSequence(keras.utils.PyDataset):
    """Shuffled, optionally augmented and oversampled batches of ``(x, y)``.

    Args:
        images: (N, S, S, 1) float32.
        targets: (N, S, S, 1) masks (segmentation) or ``{head: (N,) int labels}``.
        batch_size: images per batch.
        seed: base seed for shuffling, oversampling and augmentation.
        augment: augmentation spec (see :func:`augment_pair`) or None.
        oversample_labels: labels to balance by (e.g. stage), or None.
        oversample_ratio: see :func:`oversample_indices`.
        extra_inputs: arrays with one row per image, batched beside the images as further model
            inputs (precomputed features); refused with augmentation, which would make them
            stale.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray | dict[str, np.ndarray],
        batch_size: int,
        seed: int = 0,
        augment: dict[str, Any] | None = None,
        oversample_labels: np.ndarray | None = None,
        oversample_ratio: float = 1.0,
        shuffle: bool = True,
        extra_inputs: list[np.ndarray] | None = None,
    ):
        super().__init__(workers=1, use_multiprocessing=False)
        if extra_inputs and augment:
            raise ValueError("precomputed inputs cannot be combined with augmentation")
        if any(len(e) != len(images) for e in extra_inputs or []):
            raise ValueError("every extra input needs one row per image")
        self.extra_inputs = list(extra_inputs or [])
        if augment:
            unknown = set(augment) - AUGMENT_KEYS
            if unknown:
                raise ValueError(f"unknown augmentation keys {sorted(unknown)}")
        self.images = images
        self.targets = targets
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.augment = augment or None
        self.oversample_labels = oversample_labels
        self.oversample_ratio = float(oversample_ratio)
        self.shuffle = shuffle
        self.epoch = 0
        self._order = self._make_order()

    def _make_order(self) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.epoch))
        if self.oversample_labels is not None:
            order = oversample_indices(self.oversample_labels, self.oversample_ratio, rng)
        else:
            order = np.arange(len(self.images))
        if self.shuffle:
            rng.shuffle(order)
        # Top the epoch up to whole batches: a last, smaller batch would make the backend trace
        # (compile) the train step a second time, which costs more than the few extra samples.
        short = -len(order) % self.batch_size
        if short and len(order) >= self.batch_size:
            order = np.concatenate([order, rng.choice(order, size=short, replace=False)])
        elif short:
            order = np.concatenate([order, rng.choice(order, size=short, replace=True)])
        return order

    def __len__(self) -> int:
        return int(math.ceil(len(self._order) / self.batch_size))

    def __getitem__(self, index: int):
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        x = self.images[idx].copy()
        seg = not isinstance(self.targets, dict)
        y: Any
        if isinstance(self.targets, dict):
            y = {k: v[idx] for k, v in self.targets.items()}
        else:
            y = self.targets[idx].copy()
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, index, 7))
            for i in range(len(idx)):
                if seg:
                    x[i], y[i] = augment_pair(x[i], y[i], rng, self.augment)
                else:
                    x[i], _ = augment_pair(x[i], None, rng, self.augment)
        if self.extra_inputs:
            return (x, *[e[idx] for e in self.extra_inputs]), y
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._make_order()
