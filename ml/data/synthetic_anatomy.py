"""Geometry and exact masks of the synthetic lumbar phantoms (:mod:`ml.data.synthetic`).

Nothing here draws random numbers: the anatomy follows from a subject's parameters and the
slice's lateral offset alone, so a phantom's noise seed changes only how it is painted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

VERTEBRA_LEVELS = ("L1", "L2", "L3", "L4", "L5")
DISC_LEVELS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")

_SUB = 4  # fixed-point bits for sub-pixel polygon filling

# (level index, centre, angle) of one vertebral body; T11 and T12 are -2 and -1, L1-L5 0-4.
Pose = tuple[int, np.ndarray, float]


@dataclass
class Anatomy:
    """Every structure of one phantom, as masks painted from the same polygons.

    Attributes:
        body_polys: level index -> vertebral body polygon (pixels), T11 (-2) to L5 (4).
        vertebra_labels: uint8 label map of L1-L5, k = VERTEBRA_LEVELS[k - 1].
        all_bodies: uint8 {0, 1}, every vertebral body including T11 and T12.
        sacrum: uint8 {0, 1}.
        disc_labels: uint8 label map of L1/L2-L5/S1, k = DISC_LEVELS[k - 1].
        all_discs: uint8 {0, 1}, every disc including T11/T12 and T12/L1.
        points: disc level -> (x, y) pixel coordinates of the disc centre.
        canal: uint8 {0, 1}, the spinal canal.
        posterior: uint8 {0, 1}, the posterior elements.
        fat: bool, subcutaneous fat.
        abdomen: bool, abdominal soft tissue.
        muscle: bool, the rest of the body (back muscles).
    """

    body_polys: dict[int, np.ndarray]
    vertebra_labels: np.ndarray
    all_bodies: np.ndarray
    sacrum: np.ndarray
    disc_labels: np.ndarray
    all_discs: np.ndarray
    points: dict[str, tuple[float, float]]
    canal: np.ndarray
    posterior: np.ndarray
    fat: np.ndarray
    abdomen: np.ndarray
    muscle: np.ndarray


@dataclass(frozen=True)
class _Frame:
    """Where the lumbar column sits in the image and how it curves (pixels and radians)."""

    s: float  # image side
    d: float  # one level: body plus disc
    disc_h: float
    body_h: float
    half_w: float
    canal_w: float
    tilt: float
    top: float
    span: float
    cx: float  # fraction of the image side
    lordosis: float  # fraction of the image side

    @classmethod
    def from_params(cls, p: dict[str, Any], size: int, lateral: float) -> _Frame:
        s = float(size)
        d = p["spacing"] * s
        disc_h = d * p["disc_frac"]
        width_scale = 1.0 - 0.08 * lateral**2
        return cls(
            s=s,
            d=d,
            disc_h=disc_h,
            body_h=d - disc_h,
            half_w=0.5 * d * p["depth"] * width_scale,
            canal_w=p["canal"] * s * (1.0 - 0.55 * abs(lateral)),
            tilt=math.radians(p["tilt_deg"]),
            top=p["top"] * s,
            span=5.0 * d,
            cx=p["cx"],
            lordosis=p["lordosis"],
        )

    def centre_x(self, y: float) -> float:
        t = (y - self.top) / self.span
        return self.cx * self.s - self.lordosis * self.s * math.sin(
            math.pi * min(max(t, -0.3), 1.1)
        )

    def axis_angle(self, y: float) -> float:
        eps = 1.0
        dx = self.centre_x(y + eps) - self.centre_x(y - eps)
        return math.atan2(dx, 2 * eps)

    def rotate_about(self, pt: np.ndarray, pivot: np.ndarray) -> np.ndarray:
        # The whole spine is tilted a little about the L3 centre (patient positioning).
        return (pt - pivot) @ _rot(-self.tilt).T + pivot


@dataclass(frozen=True)
class _Sacrum:
    top: np.ndarray  # centre of the S1 endplate
    axis: np.ndarray  # unit vector down its long axis
    norm: np.ndarray  # unit vector across it
    length: float
    angle: float
    mask: np.ndarray


def draw_anatomy(p: dict[str, Any], size: int, lateral: float) -> Anatomy:
    """Draw every structure of one phantom.

    Args:
        p: the subject's parameters (:func:`ml.data.synthetic.sample_params`).
        size: image side length in pixels.
        lateral: distance of the slice from the midline in [-1, 1].

    Returns:
        The masks, label maps, body polygons and disc level points.
    """
    shape = (size, size)
    f = _Frame.from_params(p, size, lateral)
    bodies = _body_poses(f)
    body_polys, vert_labels, all_bodies = _draw_bodies(bodies, f, shape)
    sac = _draw_sacrum(bodies[-1], f, p["sacral_deg"], shape)
    disc_labels, all_discs, points = _draw_discs(bodies, sac, f, all_bodies, shape)
    centres = [c for _, c, _ in bodies]
    angles = [a for _, _, a in bodies]
    canal = _draw_canal(centres, angles, sac, f, shape)
    canal &= 1 - all_bodies
    canal &= 1 - all_discs
    posterior = _draw_posterior(centres, angles, f, shape)
    posterior &= 1 - canal
    fat, abdomen, muscle = _soft_tissue(p, size, f)
    return Anatomy(
        body_polys=body_polys,
        vertebra_labels=vert_labels,
        all_bodies=all_bodies,
        sacrum=sac.mask,
        disc_labels=disc_labels,
        all_discs=all_discs,
        points=points,
        canal=canal,
        posterior=posterior,
        fat=fat,
        abdomen=abdomen,
        muscle=muscle,
    )


def _rot(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _axis(angle: float) -> np.ndarray:
    """Unit vector down the long axis of a structure turned by ``angle``."""
    return np.array([math.sin(-angle), math.cos(-angle)])


def _posterior_normal(angle: float) -> np.ndarray:
    """Unit vector from a body towards the back, perpendicular to its axis."""
    return np.array([math.cos(-angle), -math.sin(-angle)])


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


def _body_poses(f: _Frame) -> list[Pose]:
    """Vertebral bodies T11, T12 and L1-L5 along the lordotic curve."""
    pivot = np.array([f.centre_x(f.top + 2.5 * f.d), f.top + 2.5 * f.d])
    bodies: list[Pose] = []
    for k in range(-2, 5):
        yc = f.top + (k + 0.5) * f.d - 0.5 * f.disc_h
        c = f.rotate_about(np.array([f.centre_x(yc), yc]), pivot)
        ang = -f.axis_angle(yc) - f.tilt
        bodies.append((k, c, ang))
    return bodies


def _draw_bodies(
    bodies: list[Pose], f: _Frame, shape: tuple[int, int]
) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """Body polygons, the L1-L5 label map and the mask of every body."""
    body_polys = {k: _box(c, f.half_w, f.body_h / 2, ang, 0.18) for k, c, ang in bodies}
    vert_labels = np.zeros(shape, np.uint8)
    all_bodies = np.zeros(shape, np.uint8)
    for k, poly in body_polys.items():
        filled = _fill(shape, poly, _SUB)
        all_bodies |= filled
        if k >= 0:
            vert_labels[filled > 0] = k + 1
    return body_polys, vert_labels, all_bodies


def _draw_sacrum(l5: Pose, f: _Frame, sacral_deg: float, shape: tuple[int, int]) -> _Sacrum:
    """Sacrum below L5/S1, its long axis turned posteriorly (to the right) by the sacral angle."""
    _, c5, a5 = l5
    s1_top = c5 + _axis(a5) * (f.body_h / 2 + f.disc_h)
    sac_ang = a5 - math.radians(sacral_deg)
    sac_axis = _axis(sac_ang)
    sac_norm = np.array([sac_axis[1], -sac_axis[0]])
    sac_len = 2.6 * f.d
    poly = np.array(
        [
            s1_top - sac_norm * f.half_w * 1.05,
            s1_top + sac_norm * f.half_w * 1.05,
            s1_top + sac_axis * sac_len + sac_norm * f.half_w * 0.35,
            s1_top + sac_axis * sac_len - sac_norm * f.half_w * 0.25,
        ]
    )
    return _Sacrum(s1_top, sac_axis, sac_norm, sac_len, sac_ang, _fill(shape, poly, _SUB))


def _disc_poses(bodies: list[Pose], sac: _Sacrum, f: _Frame) -> list[tuple[np.ndarray, float]]:
    """Discs between consecutive bodies (T11/T12 .. L4/L5) and L5/S1 (L5 to the sacrum)."""
    centres = [c for _, c, _ in bodies]
    angles = [a for _, _, a in bodies]
    poses = [
        ((centres[i] + centres[i + 1]) / 2, (angles[i] + angles[i + 1]) / 2)
        for i in range(len(centres) - 1)
    ]
    _, c5, a5 = bodies[-1]
    poses.append((c5 + _axis(a5) * (f.body_h / 2 + f.disc_h / 2), (a5 + sac.angle) / 2))
    return poses


def _draw_discs(
    bodies: list[Pose], sac: _Sacrum, f: _Frame, all_bodies: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[float, float]]]:
    """The L1/L2-L5/S1 label map, the mask of every disc and the level points.

    Discs are clipped by the bodies and the sacrum, so disc pixels never overlap bone.
    """
    disc_labels = np.zeros(shape, np.uint8)
    all_discs = np.zeros(shape, np.uint8)
    points: dict[str, tuple[float, float]] = {}
    for i, (dc, da) in enumerate(_disc_poses(bodies, sac, f)):
        disc = np.zeros(shape, np.uint8)
        cv2.ellipse(
            disc,
            (int(round(dc[0] * 16)), int(round(dc[1] * 16))),
            (int(round(f.half_w * 0.97 * 16)), int(round(f.disc_h * 0.62 * 16))),
            math.degrees(da),
            0,
            360,
            1,
            -1,
            cv2.LINE_8,
            4,
        )
        disc &= 1 - all_bodies
        disc &= 1 - sac.mask
        all_discs |= disc
        level = i - 2  # i = 0, 1 are T11/T12 and T12/L1
        if level >= 0:
            disc_labels[disc > 0] = level + 1
            points[DISC_LEVELS[level]] = (float(dc[0]), float(dc[1]))
    return disc_labels, all_discs, points


def _draw_canal(
    centres: list[np.ndarray],
    angles: list[float],
    sac: _Sacrum,
    f: _Frame,
    shape: tuple[int, int],
) -> np.ndarray:
    """Spinal canal: a band posterior to the bodies following the curve, into the sacral canal."""
    canal_pts = []
    for c, a in zip(centres, angles, strict=True):
        nrm = _posterior_normal(a)
        canal_pts.append(c + nrm * (f.half_w + 0.35 * f.canal_w + 0.03 * f.d))
    up = centres[0] - (centres[1] - centres[0]) * 3
    canal_pts.insert(0, up + np.array([f.half_w + 0.35 * f.canal_w, 0.0]))
    canal_pts.append(sac.top + sac.norm * (f.half_w * 0.55) + sac.axis * sac.length * 0.9)
    canal = np.zeros(shape, np.uint8)
    cv2.polylines(
        canal,
        [np.round(np.array(canal_pts) * 16).astype(np.int32)],
        False,
        1,
        max(1, int(round(f.canal_w))),
        cv2.LINE_8,
        4,
    )
    return canal


def _draw_posterior(
    centres: list[np.ndarray], angles: list[float], f: _Frame, shape: tuple[int, int]
) -> np.ndarray:
    """Posterior elements (pedicles / spinous processes) behind the canal at each level."""
    posterior = np.zeros(shape, np.uint8)
    for c, a in zip(centres, angles, strict=True):
        nrm = _posterior_normal(a)
        pc = c + nrm * (f.half_w + f.canal_w + 0.55 * f.d)
        cv2.ellipse(
            posterior,
            (int(round(pc[0])), int(round(pc[1]))),
            (max(2, int(0.45 * f.d)), max(2, int(0.22 * f.d))),
            math.degrees(a) - 15,
            0,
            360,
            1,
            -1,
        )
    return posterior


def _soft_tissue(
    p: dict[str, Any], size: int, f: _Frame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fat, abdomen and muscle: back skin on the right, abdomen on the left, a fat band."""
    s = f.s
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    back_x = (p["cx"] + p["back"]) * s + 0.04 * s * np.sin(yy / s * math.pi * 1.3)
    belly_x = p["belly"] * s + 0.05 * s * np.cos(yy / s * math.pi)
    inside = (xx > belly_x) & (xx < back_x)
    fat = inside & ((xx > back_x - p["fat_band"] * s) | (xx < belly_x + 0.5 * p["fat_band"] * s))
    spine_x = np.array([f.centre_x(float(y)) for y in range(size)], dtype=np.float32)[:, None]
    abdomen = inside & ~fat & (xx < spine_x - f.half_w * 1.1)
    muscle = inside & ~fat & ~abdomen
    return fat, abdomen, muscle
