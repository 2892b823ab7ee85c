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
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

VERTEBRA_LEVELS = ("L1", "L2", "L3", "L4", "L5")
DISC_LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")

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


def _rot(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _box(center: np.ndarray, half_w: float, half_h: float, angle: float, cut: float) -> np.ndarray:
    """A rectangle with cut corners (a vertebral body), rotated about its centre."""
    cw, ch = half_w * cut, half_h * cut
    pts = np.array(
        [
            [-half_w + cw, -half_h], [half_w - cw, -half_h], [half_w, -half_h + ch],
            [half_w, half_h - ch], [half_w - cw, half_h], [-half_w + cw, half_h],
            [-half_w, half_h - ch], [-half_w, -half_h + ch],
        ]
    )  # fmt: skip
    return pts @ _rot(angle).T + center


def _fill(shape: tuple[int, int], poly: np.ndarray, scale: int) -> np.ndarray:
    """Fill a polygon given in pixel coordinates with sub-pixel precision (cv2 shift bits)."""
    out = np.zeros(shape, dtype=np.uint8)
    pts = np.round(poly * (1 << scale)).astype(np.int32)
    cv2.fillPoly(out, [pts], 1, lineType=cv2.LINE_8, shift=scale)
    return out


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
    rng = np.random.default_rng(seed)
    p = dict(params) if params is not None else sample_params(rng, profile)
    p.update(overrides)
    tissue = p["tissue"]
    s = float(size)
    shape = (size, size)
    sub = 4  # fixed-point bits for sub-pixel polygon filling

    d = p["spacing"] * s
    disc_h = d * p["disc_frac"]
    body_h = d - disc_h
    width_scale = 1.0 - 0.08 * lateral**2
    half_w = 0.5 * d * p["depth"] * width_scale
    tilt = math.radians(p["tilt_deg"])
    top = p["top"] * s
    span = 5.0 * d

    def centre_x(y: float) -> float:
        t = (y - top) / span
        return p["cx"] * s - p["lordosis"] * s * math.sin(math.pi * min(max(t, -0.3), 1.1))

    def axis_angle(y: float) -> float:
        eps = 1.0
        dx = centre_x(y + eps) - centre_x(y - eps)
        return math.atan2(dx, 2 * eps)

    def rotate_about(pt: np.ndarray, pivot: np.ndarray) -> np.ndarray:
        # The whole spine is tilted a little about the L3 centre (patient positioning).
        return (pt - pivot) @ _rot(-tilt).T + pivot

    pivot = np.array([centre_x(top + 2.5 * d), top + 2.5 * d])

    # Vertebral bodies T11, T12 (index -2, -1) and L1..L5 (0..4) along the lordotic curve.
    bodies: list[tuple[int, np.ndarray, float]] = []
    for k in range(-2, 5):
        yc = top + (k + 0.5) * d - 0.5 * disc_h
        c = rotate_about(np.array([centre_x(yc), yc]), pivot)
        ang = -axis_angle(yc) - tilt
        bodies.append((k, c, ang))

    body_polys = {k: _box(c, half_w, body_h / 2, ang, 0.18) for k, c, ang in bodies}
    vert_labels = np.zeros(shape, np.uint8)
    all_bodies = np.zeros(shape, np.uint8)
    for k, poly in body_polys.items():
        filled = _fill(shape, poly, sub)
        all_bodies |= filled
        if k >= 0:
            vert_labels[filled > 0] = k + 1

    # Sacrum: below L5/S1, its long axis turned posteriorly (to the right) by the sacral angle.
    k5, c5, a5 = bodies[-1]
    axis5 = np.array([math.sin(-a5), math.cos(-a5)])
    s1_top = c5 + axis5 * (body_h / 2 + disc_h)
    sac_ang = a5 - math.radians(p["sacral_deg"])
    sac_axis = np.array([math.sin(-sac_ang), math.cos(-sac_ang)])
    sac_norm = np.array([sac_axis[1], -sac_axis[0]])
    sac_len = 2.6 * d
    sacrum_poly = np.array(
        [
            s1_top - sac_norm * half_w * 1.05,
            s1_top + sac_norm * half_w * 1.05,
            s1_top + sac_axis * sac_len + sac_norm * half_w * 0.35,
            s1_top + sac_axis * sac_len - sac_norm * half_w * 0.25,
        ]
    )
    sacrum = _fill(shape, sacrum_poly, sub)

    # Discs between consecutive bodies (T11/T12 .. L4/L5) and L5/S1 (L5 to the sacrum).
    centres = [c for _, c, _ in bodies]
    angles = [a for _, _, a in bodies]
    disc_centres = [(centres[i] + centres[i + 1]) / 2 for i in range(len(centres) - 1)]
    disc_angles = [(angles[i] + angles[i + 1]) / 2 for i in range(len(angles) - 1)]
    disc_centres.append(c5 + axis5 * (body_h / 2 + disc_h / 2))
    disc_angles.append((a5 + sac_ang) / 2)
    disc_labels = np.zeros(shape, np.uint8)
    all_discs = np.zeros(shape, np.uint8)
    points: dict[str, tuple[float, float]] = {}
    for i, (dc, da) in enumerate(zip(disc_centres, disc_angles, strict=True)):
        disc = np.zeros(shape, np.uint8)
        cv2.ellipse(
            disc,
            (int(round(dc[0] * 16)), int(round(dc[1] * 16))),
            (int(round(half_w * 0.97 * 16)), int(round(disc_h * 0.62 * 16))),
            math.degrees(da),
            0,
            360,
            1,
            -1,
            cv2.LINE_8,
            4,
        )
        disc &= 1 - all_bodies
        disc &= 1 - sacrum
        all_discs |= disc
        level = i - 2  # i = 0, 1 are T11/T12 and T12/L1
        if level >= 0:
            disc_labels[disc > 0] = level + 1
            points[DISC_LEVELS[level]] = (float(dc[0]), float(dc[1]))

    # Spinal canal: a band posterior to the bodies following the curve, into the sacral canal.
    canal_w = p["canal"] * s * (1.0 - 0.55 * abs(lateral))
    canal_pts = []
    for c, a in zip(centres, angles, strict=True):
        nrm = np.array([math.cos(-a), -math.sin(-a)])
        canal_pts.append(c + nrm * (half_w + 0.35 * canal_w + 0.03 * d))
    up = centres[0] - (centres[1] - centres[0]) * 3
    canal_pts.insert(0, up + np.array([half_w + 0.35 * canal_w, 0.0]))
    canal_pts.append(s1_top + sac_norm * (half_w * 0.55) + sac_axis * sac_len * 0.9)
    canal = np.zeros(shape, np.uint8)
    cv2.polylines(
        canal,
        [np.round(np.array(canal_pts) * 16).astype(np.int32)],
        False,
        1,
        max(1, int(round(canal_w))),
        cv2.LINE_8,
        4,
    )
    canal &= 1 - all_bodies
    canal &= 1 - all_discs

    # Posterior elements (pedicles / spinous processes) behind the canal at each level.
    posterior = np.zeros(shape, np.uint8)
    for c, a in zip(centres, angles, strict=True):
        nrm = np.array([math.cos(-a), -math.sin(-a)])
        pc = c + nrm * (half_w + canal_w + 0.55 * d)
        cv2.ellipse(
            posterior,
            (int(round(pc[0])), int(round(pc[1]))),
            (max(2, int(0.45 * d)), max(2, int(0.22 * d))),
            math.degrees(a) - 15,
            0,
            360,
            1,
            -1,
        )
    posterior &= 1 - canal

    # Body outline: back skin on the right, abdomen on the left, subcutaneous fat band.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    back_x = (p["cx"] + p["back"]) * s + 0.04 * s * np.sin(yy / s * math.pi * 1.3)
    belly_x = p["belly"] * s + 0.05 * s * np.cos(yy / s * math.pi)
    inside = (xx > belly_x) & (xx < back_x)
    fat = inside & ((xx > back_x - p["fat_band"] * s) | (xx < belly_x + 0.5 * p["fat_band"] * s))
    spine_x = np.array([centre_x(float(y)) for y in range(size)], dtype=np.float32)[:, None]
    abdomen = inside & ~fat & (xx < spine_x - half_w * 1.1)
    muscle = inside & ~fat & ~abdomen

    img: np.ndarray = np.full(shape, 0.02, np.float32)
    img[muscle] = tissue["muscle"]
    img[abdomen] = tissue["abdomen"]
    img += (abdomen * 0.12 * _smooth_noise(rng, shape, 3.0)).astype(np.float32)
    img[fat] = tissue["fat"]
    img[posterior > 0] = tissue["posterior"]
    img[canal > 0] = tissue["csf"]

    # Discs: degeneration darkens some (less water), varied per level.
    for lvl in range(1, 6):
        dim = 1.0 - p["disc_degeneration"] * float(rng.uniform(0.0, 1.0)) * (lvl / 5)
        img[disc_labels == lvl] = tissue["disc"] * dim
    img[(all_discs > 0) & (disc_labels == 0)] = tissue["disc"]

    marrow = tissue["body"] * (1 + p["texture"] * _smooth_noise(rng, shape, 0.8))
    bone = (all_bodies | sacrum) > 0
    img[bone] = marrow[bone]
    # Dark cortical rim around each body and the sacrum (cortical bone has no MR signal).
    rim = cv2.morphologyEx((all_bodies | sacrum), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    img[(rim > 0) & bone] *= 0.45

    # Anterior bony bridges between adjacent bodies (syndesmophyte-like); outside the masks.
    for i in rng.permutation(5)[: p["bridges"]]:
        a_poly, b_poly = body_polys[int(i) - 1], body_polys[int(i)]
        p0, p1 = a_poly[6], b_poly[0]  # lower-anterior corner of upper, upper-anterior of lower
        cv2.line(
            img,
            (int(round(p0[0])), int(round(p0[1]))),
            (int(round(p1[0])), int(round(p1[1]))),
            float(tissue["body"] * 0.9),
            2,
        )

    if p["blur"] > 0:
        img = cv2.GaussianBlur(img, (0, 0), p["blur"])
    bias = 1.0 + p["bias"] * ((xx / s - 0.5) + 0.5 * (yy / s - 0.5))
    img = img * bias * p["gain"]
    sigma = p["noise"]
    n1 = rng.normal(0.0, sigma, shape).astype(np.float32)
    n2 = rng.normal(0.0, sigma, shape).astype(np.float32)
    img = np.sqrt((img + n1) ** 2 + n2**2)  # Rician magnitude noise, as in MR
    img = np.clip(img, 0.0, 1.0).astype(np.float32)

    return Phantom(
        image=img,
        mask=(vert_labels > 0).astype(np.uint8),
        points=points,
        disc_mask=(disc_labels > 0).astype(np.uint8),
        vertebra_labels=vert_labels,
        disc_labels=disc_labels,
        params=p,
    )


# --------------------------------------------------------------------------- source writer

DEFAULT_SOURCES = ("synth_t1", "synth_t2")


def _profile_for(source: str) -> str:
    return "t2" if "t2" in source.lower() else "t1"


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
    ss = np.random.SeedSequence(seed)
    subject_seeds = ss.spawn(n_subjects)
    coords_rows: list[list[Any]] = []
    slice_rows: list[list[Any]] = []
    counters: dict[str, int] = {}
    for i in range(n_subjects):
        source = sources[i % len(sources)]
        counters[source] = counters.get(source, 0) + 1
        subj_no = counters[source]
        structure = structure_by_source.get(source, "vertebral_body")
        rng = np.random.default_rng(subject_seeds[i])
        params = sample_params(rng, _profile_for(source))
        img_dir = root / f"processed_{source}"
        jpg_dir = root / f"processed_{source}_jpgs"
        mask_dir = root / "masks" / source
        for d in (img_dir, jpg_dir, mask_dir):
            d.mkdir(parents=True, exist_ok=True)
        centre = 20 + int(rng.integers(0, 20))
        for j in range(slices_per_subject):
            offset = j - (slices_per_subject - 1) / 2
            lateral = float(np.clip(offset * 0.35, -1.0, 1.0))
            slice_index = centre + int(round(offset * 4))
            ph = make_phantom(int(rng.integers(0, 2**31 - 1)), size, params=params, lateral=lateral)
            stem = f"{subj_no:02d}_s{slice_index}"
            u8 = np.clip(np.rint(ph.image * 255), 0, 255).astype(np.uint8)
            np.save(img_dir / f"{stem}.npy", u8)
            cv2.imwrite(str(jpg_dir / f"{stem}.jpg"), u8, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if structure == "disc":
                labels, names = ph.disc_labels, DISC_LEVELS
            else:
                labels, names = ph.vertebra_labels, VERTEBRA_LEVELS
            cv2.imwrite(str(mask_dir / f"{stem}.png"), labels)
            mask_labels = {str(k + 1): names[k] for k in range(len(names))}
            slice_rows.append(
                [
                    f"{stem}.jpg", source, f"{source}-{subj_no:02d}",
                    f"PHANTOM_{source}_{subj_no:02d}", slice_index, structure,
                    f"masks/{source}/{stem}.png", json.dumps(mask_labels),
                ]
            )  # fmt: skip
            if source in no_points_sources:
                continue
            for level in reversed(DISC_LEVELS):  # L5/S1 first, like the Kaggle file
                x, y = ph.points[level]
                xi, yi = int(round(x)), int(round(y))
                coords_rows.append([f"{stem}.jpg", source, xi, yi, level, xi / size, yi / size])
    with open(root / "coords_pretrain.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["filename", "source", "x", "y", "level", "relative_x", "relative_y"])
        w.writerows(coords_rows)
    with open(root / "slices.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(
            ["filename", "source", "subject_id", "volume", "slice_index", "structure",
             "mask_path", "mask_labels"]
        )  # fmt: skip
        w.writerows(slice_rows)
    return root


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
