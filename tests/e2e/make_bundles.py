"""Fixtures for the browser suite: tiny random-weight model bundles and sample uploads.

Usage: ``python tests/e2e/make_bundles.py MODELS_DIR [--samples DIR]``

Writes two segmenters and two classifiers (so the web app can offer a choice of segmenter and
compare models side by side) into
MODELS_DIR, and, with ``--samples``, the uploads: an MRI slice (a real lumbar slice from
../shared/data when it is present, otherwise a synthetic phantom, so a fresh clone works too),
a noise image, and a synthetic sagittal series as DICOM instances (``series/``) and as one NIfTI
volume (``volume.nii.gz``).

The applicability-domain reference (``models/domain_reference.npz``) is installed beside the
bundles only when the sample slice lies inside it, so the single-image scenarios keep their
outputs and the noise image shows the out-of-domain banner; elsewhere the server runs without
one (header checks only).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[2]
SHARED_SLICES = ROOT.parent / "shared" / "data" / "lumbar_mri"
DOMAIN_REFERENCE = ROOT / "models" / "domain_reference.npz"
# The study sample: small enough to be analysed in seconds on a CPU.
SERIES_SLICES = 12
SERIES_SIZE = 96

log = logging.getLogger("make_bundles")

BUNDLES = [
    # key, architecture, default, seed
    ("seg_tiny", "attention_unet_lite", True, 0),
    ("seg_tiny_b", "attention_unet_lite", False, 1),
    ("cnn_tiny", "simple_cnn", True, 0),
    ("cnn_tiny_b", "simple_cnn", False, 1),
]


def _plot_png(title: str) -> bytes:
    """A labelled figure standing in for a bundle plot (these weights were never evaluated)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((60, 40, 260, 200), outline=(60, 60, 60), width=2)
    draw.line((160, 40, 160, 200), fill=(60, 60, 60), width=1)
    draw.line((60, 120, 260, 120), fill=(60, 60, 60), width=1)
    draw.text((70, 12), title, fill=(20, 20, 20))
    draw.text((70, 210), "random test weights: not evaluated", fill=(90, 90, 90))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_bundles(models_dir: Path) -> list[Path]:
    from ml.bundle import make_random_bundle

    models_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for key, architecture, default, seed in BUNDLES:
        if (models_dir / key / "manifest.json").is_file():
            made.append(models_dir / key)
            continue
        bundle = make_random_bundle(models_dir, key, architecture, default=default, seed=seed)
        (bundle / "README.md").write_text(
            f"# {key}\n\nTiny {architecture} with random weights, made for the browser test "
            "suite. Research use only - not a diagnosis.\n",
            encoding="utf-8",
        )
        if architecture == "simple_cnn":
            (bundle / "plots").mkdir(exist_ok=True)
            (bundle / "plots" / "confusion_binary.png").write_bytes(_plot_png(f"{key}: AS status"))
        if key == "seg_tiny":
            _add_cross_validation(bundle)
        made.append(bundle)
    return made


def _add_cross_validation(bundle: Path) -> None:
    """A cross-validation record for the model card's section to show (its note says that it is
    a fixture: these random weights were never cross-validated)."""
    from ml.bundle import update_manifest
    from ml.manifest import CrossValidation

    def fold(i: int, iou: float, dice: float) -> dict[str, object]:
        return {"fold": i, "subjects": 3, "n": 27, "metrics": {"iou": iou, "dice": dice}}

    record = CrossValidation(
        k=2, subjects=6, slices=54,
        metrics={
            "iou": {"pooled": 0.61, "fold_mean": 0.61, "ci95": (0.55, 0.66)},
            "dice": {"pooled": 0.75, "fold_mean": 0.75, "ci95": (0.70, 0.79)},
        },
        folds=[fold(0, 0.58, 0.73), fold(1, 0.64, 0.77)],
        by_source={"phantom": {"subjects": 6, "n": 54, "iou": 0.61, "dice": 0.75}},
        fold_results="cross_validation/",
        note="browser-suite fixture, not a measurement",
    )  # fmt: skip
    update_manifest(bundle, {"cross_validation": record.model_dump(mode="json")})


def write_sample(samples_dir: Path) -> Path:
    """The slice the browser uploads: a real lumbar MRI JPEG when available, else a phantom PNG."""
    samples_dir.mkdir(parents=True, exist_ok=True)
    # Prefer the sagittal T1 volunteers' slices; any source will do.
    jpgs = sorted(SHARED_SLICES.glob("processed_myosegmentum_jpgs/*.jpg")) or sorted(
        SHARED_SLICES.glob("processed_*_jpgs/*.jpg")
    )
    if jpgs:
        target = samples_dir / f"lumbar_{jpgs[0].name}"
        target.write_bytes(jpgs[0].read_bytes())
        return target
    import numpy as np
    from PIL import Image

    from ml.data.synthetic import make_phantom

    phantom = make_phantom(7)
    pixels = np.clip(np.asarray(phantom.image) * 255.0, 0, 255).astype(np.uint8)
    target = samples_dir / "phantom_slice.png"
    Image.fromarray(pixels).save(target)
    return target


def write_noise(samples_dir: Path) -> Path:
    """A uniform-noise PNG: nothing like an MRI slice, so out of the applicability domain."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    target = samples_dir / "noise.png"
    Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(target)
    return target


def write_series(samples_dir: Path) -> tuple[Path, Path]:
    """A synthetic sagittal series: one DICOM file per slice, and the same as one NIfTI volume."""
    from ml.data.synthetic_series import dicom_series, nifti_volume, phantom_series

    series = phantom_series(SERIES_SLICES, SERIES_SIZE, seed=3)
    folder = samples_dir / "series"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in dicom_series(series, seed=3):
        (folder / name).write_bytes(data)
    volume = samples_dir / "volume.nii.gz"
    volume.write_bytes(nifti_volume(series))
    return folder, volume


def sample_in_domain(sample: Path, reference: Path) -> bool:
    """Whether the sample slice, prepared as the server prepares it, lies inside the reference."""
    from ml.domain import DomainReference
    from ml.io import read_image
    from ml.preprocessing import IMAGE_SIZE, preprocess

    ref = DomainReference.load(reference)
    pixels = read_image(sample.read_bytes()).pixels
    return ref.score(preprocess(pixels, IMAGE_SIZE)).in_domain


def install_domain_reference(models_dir: Path, sample: Path) -> bool:
    """Copy the project's domain reference next to the bundles when the sample lies inside it."""
    target = models_dir / DOMAIN_REFERENCE.name
    if not DOMAIN_REFERENCE.is_file():
        target.unlink(missing_ok=True)
        return False
    try:
        inside = sample_in_domain(sample, DOMAIN_REFERENCE)
    except Exception as exc:  # noqa: BLE001 - a stale or unreadable reference: run without one
        log.warning("domain reference not used: %s", exc)
        inside = False
    if not inside:
        target.unlink(missing_ok=True)
        return False
    target.write_bytes(DOMAIN_REFERENCE.read_bytes())
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models_dir", type=Path)
    parser.add_argument(
        "--samples",
        type=Path,
        help="also write the sample uploads (slice, series) into this folder",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bundles = make_bundles(args.models_dir)
    result: dict[str, object] = {"bundles": [b.name for b in bundles]}
    if args.samples:
        sample = write_sample(args.samples)
        series, volume = write_series(args.samples)
        result.update(
            sample=str(sample),
            noise=str(write_noise(args.samples)),
            series=str(series),
            series_files=sorted(str(p) for p in series.iterdir()),
            volume=str(volume),
            domain_reference=install_domain_reference(args.models_dir, sample),
        )
    # One JSON line on stdout for the calling script.
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
