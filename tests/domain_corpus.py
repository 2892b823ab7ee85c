"""Images that are not sagittal lumbar MR, from packages every install has: pydicom's (and
pydicom-data's) test files (brain, knee/extremity, chest, abdomen, ultrasound, CT, ...),
nibabel's test volumes, matplotlib's sample photos, and generated noise, gradients and shapes."""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterator

import numpy as np


def _dicom_images() -> Iterator[tuple[str, bytes]]:
    from pydicom.data import get_testdata_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = get_testdata_files("*")
    for path in sorted(paths):
        if os.path.isfile(path) and (path.endswith(".dcm") or "." not in os.path.basename(path)):
            with open(path, "rb") as fh:
                yield f"pydicom:{os.path.basename(path)}", fh.read()


def _package_images() -> Iterator[tuple[str, bytes]]:
    import matplotlib
    import nibabel

    sample = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        with open(os.path.join(sample, name), "rb") as fh:
            yield f"matplotlib:{name}", fh.read()
    data = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data")
    for path in sorted(glob.glob(os.path.join(data, "*.nii*"))):
        with open(path, "rb") as fh:
            yield f"nibabel:{os.path.basename(path)}", fh.read()


def generated() -> Iterator[tuple[str, np.ndarray]]:
    """Noise, gradients, stripes and shapes as float images in [0, 1]."""
    import cv2

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    for k in range(6):
        yield f"uniform-noise-{k}", rng.random((256, 256))
        yield f"gaussian-noise-{k}", np.clip(rng.normal(0.5, 0.2, (256, 256)), 0, 1)
        yield f"gradient-{k}", (xx * np.cos(k) + yy * np.sin(k)) % 1.0
        yield f"stripes-{k}", 0.5 + 0.5 * np.sin(2 * np.pi * (k + 2) * (xx + yy))
        shapes = np.zeros((256, 256), np.float32)
        for _ in range(8):
            centre = tuple(int(v) for v in rng.integers(20, 236, 2))
            cv2.circle(shapes, centre, int(rng.integers(8, 60)), float(rng.random()), -1)
        yield f"shapes-{k}", shapes


def corpus() -> Iterator[tuple[str, np.ndarray]]:
    """(name, preprocessed 256x256 slice) for every non-lumbar image that decodes."""
    from ml.io import ImageError, read_image
    from ml.preprocessing import preprocess

    for name, data in (*_dicom_images(), *_package_images()):
        try:
            loaded = read_image(data)
        except ImageError:
            continue
        if min(loaded.pixels.shape[:2]) < 32:
            continue  # a 3x3 or 10x10 test pattern is no image of anatomy
        yield name, preprocess(loaded.pixels, 256)
    for name, image in generated():
        yield name, np.asarray(image, dtype=np.float32)
