"""Spine-like sagittal MRI phantoms with exact masks and level points.

Every test that needs a dataset builds one from these phantoms, so the suite runs on a fresh
clone without ``../shared``. A phantom is a mid-sagittal lumbar slice shown the way the real
data is (superior up, anterior left): vertebral bodies T11/T12 (unlabelled) and L1-L5, the
intervertebral discs down to L5/S1, the sacrum, the spinal canal, posterior elements, back
muscles, subcutaneous fat, abdominal soft tissue, a bias field and Rician noise.

The masks are exact because the image is painted from the same polygons: ``mask`` holds the
L1-L5 vertebral bodies, ``disc_mask`` the L1/L2..L5/S1 discs (disc pixels never overlap
bodies), and ``points`` are the disc centres keyed like the Kaggle coordinates (``"L4/L5"``).

Subjects differ in curvature, position, size, contrast, noise, texture and sharpness, and each
synthetic "source" has its own scanner profile (T1-like or T2-like), so the feature-rule labels
get both classes and every stage, and the per-source vs global normalisation question shows up
in synthetic data as it does in the real data.

The anatomy (geometry, masks, level points) is drawn in :mod:`ml.data.synthetic_anatomy`; this
module samples the parameters, paints the image and writes synthetic sources.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ml.data.synthetic_anatomy import DISC_LEVELS, VERTEBRA_LEVELS, Anatomy, draw_anatomy

__all__ = [
    "DEFAULT_SOURCES",
    "DISC_LEVELS",
    "PROFILES",
    "VERTEBRA_LEVELS",
    "Phantom",
    "make_phantom",
    "make_synthetic_dataset",
    "sample_params",
    "write_synthetic_source",
]

# Tissue intensities (before gain) for the two synthetic sequences. T2: bright CSF and discs,
# darker overall; T1: bright fat and marrow, dark CSF. The sources differ as real scanners do.
PROFILES: dict[str, dict[str, float]] = {
    "t1": {"body": 0.55, "disc": 0.40, "csf": 0.15, "fat": 0.85, "muscle": 0.28,
           "abdomen": 0.38, "posterior": 0.50, "gain": 1.0},
    "t2": {"body": 0.38, "disc": 0.75, "csf": 0.92, "fat": 0.62, "muscle": 0.18,
           "abdomen": 0.30, "posterior": 0.33, "gain": 0.62},
}  # fmt: skip


@dataclass
class Phantom:
    """One synthetic sagittal slice and its ground truth.

    Attributes:
        image: float32 (size, size) in [0, 1].
        mask: uint8 (size, size) binary {0, 1}: the L1-L5 vertebral bodies.
        points: disc level -> (x, y) pixel coordinates of the disc centre, L1/L2..L5/S1.
        disc_mask: uint8 (size, size) binary {0, 1}: the L1/L2..L5/S1 discs.
        vertebra_labels: uint8 label map, k = VERTEBRA_LEVELS[k - 1].
        disc_labels: uint8 label map, k = DISC_LEVELS[k - 1].
        params: the parameters the phantom was drawn with.
    """

    image: np.ndarray
    mask: np.ndarray
    points: dict[str, tuple[float, float]]
    disc_mask: np.ndarray
    vertebra_labels: np.ndarray
    disc_labels: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def sample_params(rng: np.random.Generator, profile: str = "t1") -> dict[str, Any]:
    """Draw one subject's anatomy and acquisition parameters (fractions of the image size)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    tissue = {k: float(v * rng.uniform(0.85, 1.15)) for k, v in PROFILES[profile].items()}
    return {
        "profile": profile,
        "cx": float(rng.uniform(0.47, 0.58)),
        "top": float(rng.uniform(0.10, 0.20)),
        "spacing": float(rng.uniform(0.105, 0.13)),
        "disc_frac": float(rng.uniform(0.18, 0.30)),
        "depth": float(rng.uniform(0.85, 1.05)),
        "lordosis": float(rng.uniform(0.0, 0.07)),
        "tilt_deg": float(rng.uniform(-7.0, 7.0)),
        "sacral_deg": float(rng.uniform(22.0, 40.0)),
        "canal": float(rng.uniform(0.035, 0.055)),
        "back": float(rng.uniform(0.30, 0.40)),
        "belly": float(rng.uniform(0.0, 0.15)),
        "fat_band": float(rng.uniform(0.015, 0.06)),
        "tissue": tissue,
        "gain": float(tissue["gain"] * rng.uniform(0.7, 1.25)),
        "noise": float(rng.uniform(0.008, 0.06)),
        "texture": float(rng.uniform(0.0, 0.14)),
        "blur": float(rng.uniform(0.3, 1.6)),
        "bias": float(rng.uniform(-0.3, 0.3)),
        "bridges": int(rng.integers(0, 5)),
        "disc_degeneration": float(rng.uniform(0.0, 0.7)),
    }


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise: np.ndarray = cv2.GaussianBlur(
        rng.standard_normal(shape).astype(np.float32), (0, 0), sigma
    )
    return noise / (float(noise.std()) + 1e-6)


def make_phantom(
    seed: int,
    size: int = 256,
    *,
    profile: str = "t1",
    params: dict[str, Any] | None = None,
    lateral: float = 0.0,
    **overrides: Any,
) -> Phantom:
    """Paint one sagittal lumbar phantom.

    Args:
        seed: seeds the noise (and the anatomy when ``params`` is None).
        size: output side length in pixels.
        profile: scanner profile, ``"t1"`` or ``"t2"``, when the parameters are drawn here.
        params: a subject's parameters from :func:`sample_params`; slices of one subject share
            them and differ by ``lateral`` and the noise seed.
        lateral: distance of the slice from the midline in [-1, 1]; off-midline slices show a
            narrower canal and slightly narrower bodies.
        **overrides: replace single parameters (for example ``noise=0.0`` or ``lordosis=0.05``).

    Returns:
        The phantom with its exact masks and level points.
    """
    # One generator for the parameters and every painting step, drawn from in a fixed order
    # (parameters, soft tissue, discs, marrow, bridges, noise): phantoms are compared by hash.
    rng = np.random.default_rng(seed)
    p = dict(params) if params is not None else sample_params(rng, profile)
    p.update(overrides)
    shape = (size, size)
    anatomy = draw_anatomy(p, size, lateral)
    img = _paint_tissues(anatomy, p["tissue"], rng, shape)
    _paint_discs(img, anatomy, p["tissue"]["disc"], p["disc_degeneration"], rng)
    _paint_bone(img, anatomy, p["tissue"]["body"], p["texture"], rng, shape)
    _paint_bridges(img, anatomy.body_polys, p["tissue"]["body"], p["bridges"], rng)
    img = _acquire(img, p, rng, size)
    return Phantom(
        image=img,
        mask=(anatomy.vertebra_labels > 0).astype(np.uint8),
        points=anatomy.points,
        disc_mask=(anatomy.disc_labels > 0).astype(np.uint8),
        vertebra_labels=anatomy.vertebra_labels,
        disc_labels=anatomy.disc_labels,
        params=p,
    )


def _paint_tissues(
    a: Anatomy, tissue: dict[str, float], rng: np.random.Generator, shape: tuple[int, int]
) -> np.ndarray:
    """Soft tissue, posterior elements and CSF on a near-black background."""
    img: np.ndarray = np.full(shape, 0.02, np.float32)
    img[a.muscle] = tissue["muscle"]
    img[a.abdomen] = tissue["abdomen"]
    img += (a.abdomen * 0.12 * _smooth_noise(rng, shape, 3.0)).astype(np.float32)
    img[a.fat] = tissue["fat"]
    img[a.posterior > 0] = tissue["posterior"]
    img[a.canal > 0] = tissue["csf"]
    return img


def _paint_discs(
    img: np.ndarray, a: Anatomy, disc: float, degeneration: float, rng: np.random.Generator
) -> None:
    """Discs; degeneration darkens some (less water), more at the lower levels."""
    for lvl in range(1, 6):
        dim = 1.0 - degeneration * float(rng.uniform(0.0, 1.0)) * (lvl / 5)
        img[a.disc_labels == lvl] = disc * dim
    img[(a.all_discs > 0) & (a.disc_labels == 0)] = disc


def _paint_bone(
    img: np.ndarray,
    a: Anatomy,
    body: float,
    texture: float,
    rng: np.random.Generator,
    shape: tuple[int, int],
) -> None:
    """Textured marrow in the bodies and the sacrum, inside a dark cortical rim."""
    marrow = body * (1 + texture * _smooth_noise(rng, shape, 0.8))
    bone = (a.all_bodies | a.sacrum) > 0
    img[bone] = marrow[bone]
    # Cortical bone has no MR signal.
    rim = cv2.morphologyEx((a.all_bodies | a.sacrum), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    img[(rim > 0) & bone] *= 0.45


def _paint_bridges(
    img: np.ndarray,
    body_polys: dict[int, np.ndarray],
    body: float,
    bridges: int,
    rng: np.random.Generator,
) -> None:
    """Anterior bony bridges between adjacent bodies (syndesmophyte-like); outside the masks."""
    # The permutation is drawn even for no bridges, so later draws do not depend on the count.
    for i in rng.permutation(5)[:bridges]:
        a_poly, b_poly = body_polys[int(i) - 1], body_polys[int(i)]
        p0, p1 = a_poly[6], b_poly[0]  # lower-anterior corner of upper, upper-anterior of lower
        cv2.line(
            img,
            (int(round(p0[0])), int(round(p0[1]))),
            (int(round(p1[0])), int(round(p1[1]))),
            float(body * 0.9),
            2,
        )


def _acquire(img: np.ndarray, p: dict[str, Any], rng: np.random.Generator, size: int) -> np.ndarray:
    """Blur, bias field, gain and Rician noise, clipped to [0, 1]."""
    if p["blur"] > 0:
        img = cv2.GaussianBlur(img, (0, 0), p["blur"])
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bias = 1.0 + p["bias"] * ((xx / s - 0.5) + 0.5 * (yy / s - 0.5))
    img = img * bias * p["gain"]
    sigma = p["noise"]
    n1 = rng.normal(0.0, sigma, (size, size)).astype(np.float32)
    n2 = rng.normal(0.0, sigma, (size, size)).astype(np.float32)
    img = np.sqrt((img + n1) ** 2 + n2**2)  # Rician magnitude noise, as in MR
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- source writer

DEFAULT_SOURCES = ("synth_t1", "synth_t2")

_COORDS_HEADER = ["filename", "source", "x", "y", "level", "relative_x", "relative_y"]
_SLICES_HEADER = [
    "filename", "source", "subject_id", "volume", "slice_index", "structure", "mask_path",
    "mask_labels",
]  # fmt: skip


def _profile_for(source: str) -> str:
    return "t2" if "t2" in source.lower() else "t1"


@dataclass(frozen=True)
class _Subject:
    """One synthetic subject of a source, numbered from 1 within it."""

    source: str
    number: int
    structure: str
    with_points: bool


def write_synthetic_source(
    directory: str | Path,
    n_subjects: int = 12,
    slices_per_subject: int = 3,
    seed: int = 0,
    *,
    sources: Sequence[str] = DEFAULT_SOURCES,
    size: int = 256,
    structure_by_source: dict[str, str] | None = None,
    no_points_sources: Sequence[str] = (),
) -> Path:
    """Write phantoms as a folder in the ``lumbar_mri`` layout.

    Layout: ``processed_<source>/<stem>.npy`` (uint8 2D), ``processed_<source>_jpgs/<stem>.jpg``,
    ``coords_pretrain.csv`` (Kaggle columns, L5/S1 first), ``masks/<source>/<stem>.png`` (label
    masks) and ``slices.csv`` (subject, structure, mask labels). Both the lumbar-mri and the
    Kaggle adapters ingest it.

    Args:
        directory: folder to create (may exist).
        n_subjects: subjects in all; assigned to the sources in turn.
        slices_per_subject: sagittal slices per subject (near the midline).
        seed: makes the whole folder reproducible.
        sources: source names; a name containing ``t2`` gets the T2-like scanner profile.
        size: slice side length.
        structure_by_source: source -> ``"vertebral_body"`` (default) or ``"disc"``: which
            structure that source's expert masks show.
        no_points_sources: sources written without coordinate rows (like ``chu``).

    Returns:
        The folder path.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    structure_by_source = dict(structure_by_source or {})
    subject_seeds = np.random.SeedSequence(seed).spawn(n_subjects)
    coords_rows: list[list[Any]] = []
    slice_rows: list[list[Any]] = []
    counters: dict[str, int] = {}
    for i in range(n_subjects):
        source = sources[i % len(sources)]
        counters[source] = counters.get(source, 0) + 1
        subject = _Subject(
            source=source,
            number=counters[source],
            structure=structure_by_source.get(source, "vertebral_body"),
            with_points=source not in no_points_sources,
        )
        rng = np.random.default_rng(subject_seeds[i])
        _write_subject(root, subject, rng, slices_per_subject, size, coords_rows, slice_rows)
    _write_csv(root / "coords_pretrain.csv", _COORDS_HEADER, coords_rows)
    _write_csv(root / "slices.csv", _SLICES_HEADER, slice_rows)
    return root


def _write_subject(
    root: Path,
    subject: _Subject,
    rng: np.random.Generator,
    slices_per_subject: int,
    size: int,
    coords_rows: list[list[Any]],
    slice_rows: list[list[Any]],
) -> None:
    """Write one subject's slices near the midline and append their CSV rows."""
    source, subj_no = subject.source, subject.number
    params = sample_params(rng, _profile_for(source))
    dirs = _source_dirs(root, source)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    centre = 20 + int(rng.integers(0, 20))
    for j in range(slices_per_subject):
        offset = j - (slices_per_subject - 1) / 2
        lateral = float(np.clip(offset * 0.35, -1.0, 1.0))
        slice_index = centre + int(round(offset * 4))
        ph = make_phantom(int(rng.integers(0, 2**31 - 1)), size, params=params, lateral=lateral)
        stem = f"{subj_no:02d}_s{slice_index}"
        mask_labels = _write_slice_files(dirs, stem, ph, subject.structure)
        slice_rows.append(
            [
                f"{stem}.jpg", source, f"{source}-{subj_no:02d}",
                f"PHANTOM_{source}_{subj_no:02d}", slice_index, subject.structure,
                f"masks/{source}/{stem}.png", json.dumps(mask_labels),
            ]
        )  # fmt: skip
        if not subject.with_points:
            continue
        for level in reversed(DISC_LEVELS):  # L5/S1 first, like the Kaggle file
            x, y = ph.points[level]
            xi, yi = int(round(x)), int(round(y))
            coords_rows.append([f"{stem}.jpg", source, xi, yi, level, xi / size, yi / size])


def _source_dirs(root: Path, source: str) -> tuple[Path, Path, Path]:
    """The .npy, .jpg and label mask folders of one source."""
    return root / f"processed_{source}", root / f"processed_{source}_jpgs", root / "masks" / source


def _write_slice_files(
    dirs: tuple[Path, Path, Path], stem: str, ph: Phantom, structure: str
) -> dict[str, str]:
    """Write a slice's .npy, .jpg and label mask; returns the mask's label -> level names."""
    img_dir, jpg_dir, mask_dir = dirs
    u8 = np.clip(np.rint(ph.image * 255), 0, 255).astype(np.uint8)
    np.save(img_dir / f"{stem}.npy", u8)
    cv2.imwrite(str(jpg_dir / f"{stem}.jpg"), u8, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if structure == "disc":
        labels, names = ph.disc_labels, DISC_LEVELS
    else:
        labels, names = ph.vertebra_labels, VERTEBRA_LEVELS
    cv2.imwrite(str(mask_dir / f"{stem}.png"), labels)
    return {str(k + 1): names[k] for k in range(len(names))}


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def make_synthetic_dataset(
    out_dir: str | Path,
    n_subjects: int = 12,
    slices_per_subject: int = 3,
    seed: int = 0,
    *,
    n: int | None = None,
    source_dir: str | Path | None = None,
    **prepare_options: Any,
) -> Path:
    """Write a synthetic source and run ``prepare`` on it; returns the dataset folder.

    Args:
        out_dir: the dataset folder to write (replaced if it holds a dataset).
        n_subjects: number of synthetic subjects.
        slices_per_subject: slices per subject.
        seed: seeds the phantoms and the split.
        n: alias of ``n_subjects``.
        source_dir: where to write the raw source (default: ``<out_dir>.source`` next to it).
        **prepare_options: passed to :func:`ml.data.prepare.prepare_dataset` (``rule``,
            ``global_thresholds``, ``structure``, ``image_level_split``, ``test_fraction``...).
    """
    from ml.data.prepare import prepare_dataset

    out = Path(out_dir)
    if n is not None:
        n_subjects = n
    src = Path(source_dir) if source_dir is not None else out.with_name(out.name + ".source")
    write_synthetic_source(src, n_subjects, slices_per_subject, seed)
    prepare_options.setdefault("seed", 42)
    prepare_dataset("lumbar-mri", src, out, **prepare_options)
    return out
