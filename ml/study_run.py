"""`spondyscan analyze DIR|series.zip|volume.nii.gz`: a whole series with local bundles.

The offline counterpart of ``POST /studies``, with the same steps and the same pure functions
(:mod:`ml.series` to read and order, :mod:`ml.study` to scale, choose key slices and aggregate):
every slice segmented into one 3D mask on the input grid, every slice classified by each model,
the study-level answer per model from the key slices, and the domain of each slice. Writes
``study.json``, ``mask.nii.gz`` and two pictures: the key slices with their masks
(``key_slices.png``) and each model's P(AS positive) along the series (``probability.png``).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ml import RESEARCH_USE_NOTICE
from ml.fsutil import write_atomic


def is_series_input(path: Path) -> bool:
    """A folder, a zip, or a NIfTI volume: analysed as a whole series."""
    name = path.name.lower()
    return path.is_dir() or name.endswith((".nii", ".nii.gz")) or zipfile.is_zipfile(path)


def read_series(path: Path) -> tuple[Any, list[tuple[str, Any]]]:
    """The series of a folder, zip or NIfTI volume, and its files (for the slices' pixels)."""
    from ml.series import SeriesError, load_nifti, scan_dicom, unsafe_name

    name = path.name.lower()
    if path.is_file() and name.endswith((".nii", ".nii.gz")):
        return load_nifti(path.read_bytes()), []
    files: list[tuple[str, Any]]
    if path.is_dir():
        files = [(str(p.relative_to(path)), p) for p in sorted(path.rglob("*")) if p.is_file()]
    else:
        with zipfile.ZipFile(path) as archive:
            if any(unsafe_name(i.filename) for i in archive.infolist()):
                raise SeriesError(
                    "unsafe_archive_name", "The zip has an entry with an unsafe name."
                )
            files = [
                (i.filename, archive.read(i))
                for i in archive.infolist()
                if not i.is_dir() and "__MACOSX/" not in i.filename
            ]
    return scan_dicom(files), files


def raw_slices(series: Any, files: list[tuple[str, Any]]) -> tuple[list, dict[int, str]]:
    """Each slice's pixels in series order (None where they cannot be decoded)."""
    from ml.io import ImageError
    from ml.series import dicom_slice

    if series.volume is not None:
        return [series.volume[i] for i in range(len(series.slices))], {}
    out: list[np.ndarray | None] = []
    errors: dict[int, str] = {}
    for i, ref in enumerate(series.slices):
        try:
            out.append(dicom_slice(files, ref))
        except ImageError as exc:
            out.append(None)
            errors[i] = exc.message
    return out, errors


def analyze_series(
    series: Any,
    raw: list,
    seg: Any,
    classifiers: list[Any],
    *,
    key_limit: int = 9,
    domain: Any = None,
) -> tuple[dict[str, Any], np.ndarray, list]:
    """The study: per-slice results, key slices, per-model aggregates, domain; and the 3D mask
    (slices, rows, cols) and the display slices.

    ``seg`` and ``classifiers`` are loaded bundles (:class:`ml.bundle.Bundle`).
    """
    from ml.domain import assess
    from ml.predict import classify, segment
    from ml.study import aggregate, display_slices, key_slices, to_grid

    size = seg.manifest.input.size
    display = display_slices(raw, size)
    readable = [i for i, d in enumerate(display) if d is not None]
    batch = np.stack([np.asarray(display[i]) for i in readable])[..., None]
    prob = segment(seg.model, batch)
    threshold = seg.manifest.mask_threshold
    volume = np.zeros((len(display), series.rows, series.cols), dtype=np.uint8)
    areas = np.zeros(len(display))
    for i, p in zip(readable, prob, strict=True):
        areas[i] = float(np.mean(p >= threshold))
        volume[i] = to_grid(p, series.rows, series.cols) >= threshold
    key = key_slices(areas, limit=key_limit)
    slices: list[dict[str, Any]] = [
        {"index": i, "key": i in key, "mask_fraction": round(float(areas[i]), 5)}
        for i in range(len(display))
    ]
    for i, d in enumerate(display):
        if d is not None:
            score = domain.score(d) if domain is not None else None
            slices[i]["domain"] = assess(score, modality=series.modality or None)
    models = []
    for bundle in classifiers:
        m = bundle.manifest
        p_status, p_stage = classify(bundle.model, batch)
        positive = m.status_names.index("positive") if "positive" in m.status_names else -1
        for i, ps in zip(readable, p_status, strict=True):
            slices[i].setdefault("p_positive", {})[m.key] = round(float(ps[positive]), 5)
        rows = [readable.index(i) for i in key]
        if rows:
            agg = aggregate(p_status[rows], p_stage[rows], m.status_names, m.stage_names)
            models.append(
                {"model": m.key, "label_provenance": m.label_provenance.model_dump(), **agg}
            )
    inside = [i for i in key if slices[i].get("domain", {}).get("in_domain", True)]
    study = {
        "input": series.summary(),
        "segmentation_model": seg.manifest.key,
        "key_slices": key,
        "key_slices_in_domain": len(inside),
        "in_domain": bool(key) and len(inside) * 2 >= len(key),
        "models": models,
        "slices": slices,
        "notice": RESEARCH_USE_NOTICE,
    }
    return study, volume, display


def _key_montage(display: list, masks: list, key: list[int]) -> bytes:
    """The key slices side by side, each with its mask outlined."""
    from ml.explain import overlay

    tiles = [overlay.draw_contours(overlay.to_rgb(np.asarray(display[i])), masks[i]) for i in key]
    return overlay.to_png(np.concatenate(tiles or [np.zeros((64, 64, 3), np.uint8)], axis=1))


def _probability_chart(study: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    xs = [s["index"] for s in study["slices"]]
    for model in sorted({k for s in study["slices"] for k in s.get("p_positive", {})}):
        ys = [s.get("p_positive", {}).get(model, np.nan) for s in study["slices"]]
        ax.plot(xs, ys, marker=".", label=model)
    for i in study["key_slices"]:
        ax.axvspan(i - 0.5, i + 0.5, color="0.9", zorder=0)
    ax.set(xlabel="slice (ordered along the slice normal)", ylabel="P(AS positive)", ylim=(0, 1))
    ax.set_title(
        "AS probability along the series (key slices shaded); research use only", fontsize=9
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_study(
    out: Path, series: Any, study: dict[str, Any], volume: np.ndarray, display: list
) -> None:
    """study.json, mask.nii.gz (input grid and affine) and the two pictures."""
    import cv2

    from ml.series import mask_to_nifti

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "mask.nii.gz", mask_to_nifti(series, volume))
    size = len(display[0]) if display and display[0] is not None else 256
    masks = [cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST) for m in volume]
    write_atomic(out / "key_slices.png", _key_montage(display, masks, study["key_slices"]))
    write_atomic(out / "probability.png", _probability_chart(study))
    write_atomic(out / "study.json", (json.dumps(study, indent=2) + "\n").encode())
