"""``spondyscan explain IMAGE --model KEY|PATH ... --out DIR``: heatmap overlays and a JSON summary.

Writes into DIR (each file atomically: a temporary file, then a rename):
    heatmap.png          the heatmap on the image (JET, alpha 0.4), with the focus box / ROI box
    heatmap_focused.png  the focused heatmap (when a focus other than ``none`` was applied)
    segmentation.png     the segmenter's mask contours and ROI box (segmentation focus or a
                         segmentation model)
    probability.png      the segmenter's per-pixel probability map (segmentation models)
    summary.json         class, probabilities, focus, inside fraction, faithfulness and its
                         one-sentence reading, label provenance and the research-use notice
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.fsutil import write_atomic
from ml.vocab import CAM_METHODS, FOCUS_MODES, HEAD_OUTPUTS

if TYPE_CHECKING:
    import numpy as np

    from ml.bundle import Bundle
    from ml.io import LoadedImage

log = logging.getLogger(__name__)

HEADS = HEAD_OUTPUTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``explain`` options."""
    parser.add_argument("image", help="image file (PNG, JPEG, NPY, DICOM, NIfTI)")
    parser.add_argument("--model", required=True, help="bundle key under --models-dir, or a path")
    parser.add_argument("--models-dir", default="models", help="folder of model bundles")
    parser.add_argument(
        "--head", choices=[*HEADS, *HEADS.values()], default="binary",
        help="classifier head to explain: AS status (binary) or stage",
    )  # fmt: skip
    parser.add_argument(
        "--method", choices=CAM_METHODS, default=None,
        help="heatmap method (default: the model's measured best, from its manifest; "
        "attention: hybrid v3 attention rollout)",
    )  # fmt: skip
    parser.add_argument(
        "--focus", choices=FOCUS_MODES, default="none",
        help="region focus: none, the design's fixed box, or the ROI from a segmentation model",
    )  # fmt: skip
    parser.add_argument(
        "--seg-model",
        help="segmentation bundle key or path for --focus segmentation (default: the default one)",
    )
    parser.add_argument("--class-index", type=int, help="class to explain (default: predicted)")
    parser.add_argument("--frame", type=int, help="frame of a multi-frame image")
    parser.add_argument(
        "--no-faithfulness", action="store_true", help="skip the deletion/insertion test"
    )
    parser.add_argument("--out", required=True, help="output folder")


def _bundle_dir(ref: str, models_dir: str) -> Path:
    from ml.clierror import CliError

    path = Path(ref)
    if (path / "manifest.json").is_file():
        return path
    candidate = Path(models_dir) / ref
    if (candidate / "manifest.json").is_file():
        return candidate
    raise CliError(f"no model bundle {ref!r} (neither a bundle folder nor a key in {models_dir})")


def _default_segmenter(models_dir: str) -> Path:
    from ml.bundle import BundleError, discover_bundles, read_manifest
    from ml.clierror import CliError

    found = []
    for path in discover_bundles(models_dir):
        try:
            manifest = read_manifest(path)
        except BundleError:
            continue
        if manifest.task == "segmentation":
            found.append((not manifest.default, path.name, path))
    if not found:
        raise CliError(
            f"--focus segmentation needs a segmentation model; none found in {models_dir} "
            "(pass --seg-model)"
        )
    return sorted(found)[0][2]


def _load(path: Path) -> Bundle:
    from ml.bundle import BundleError, load_bundle
    from ml.clierror import CliError

    try:
        return load_bundle(path)
    except BundleError as exc:
        raise CliError(str(exc)) from exc


def explain_file(args: argparse.Namespace) -> dict[str, Any]:
    """Do the work of ``run`` and return the JSON summary (also written to summary.json).

    Args:
        args: the parsed ``explain`` options (see :func:`add_arguments`).

    Returns:
        The JSON summary: :func:`ml.explain.json_summary` plus the image, the model's display
        name and intended use, the segmentation model used for the focus and the files written.
    """
    from ml.preprocessing import preprocess

    loaded = _read(args.image, args.frame)
    bundle = _load(_bundle_dir(args.model, args.models_dir))
    size = int(bundle.model.inputs[0].shape[1])
    image = preprocess(loaded.pixels, size)
    seg_info, roi_mask, roi_bbox, seg_mask = None, None, None, None
    if args.focus == "segmentation" and bundle.task == "classification":
        seg_info, roi_mask, roi_bbox, seg_mask = _segmentation_focus(args, loaded.pixels, size)
    result = _explain(bundle, image, args, roi_mask, seg_mask)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = _write_images(out, image, result, seg_mask, roi_bbox)
    summary = _summary(result, args, loaded, bundle, seg_info, files)
    write_atomic(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary


def _read(path: str, frame: int | None) -> LoadedImage:
    """The loaded image (pixels and format); a missing, unreadable or empty file is a CliError."""
    from ml.clierror import CliError
    from ml.io import ImageError, read_image, require_content

    if not Path(path).is_file():
        raise CliError(f"{path}: no such file")
    try:
        loaded = read_image(Path(path), frame=frame)
        require_content(loaded.pixels)
    except ImageError as exc:
        raise CliError(f"{path}: {exc.message}") from exc
    return loaded


def _segmentation_focus(
    args: argparse.Namespace, pixels: np.ndarray, size: int
) -> tuple[dict[str, Any], np.ndarray | None, Any, np.ndarray]:
    """Segment the image with the focus segmenter: (summary info, ROI mask, ROI box, mask).

    The segmenter's probability map is resized to the classifier's input size; the ROI mask is
    ``None`` when the ROI is empty.
    """
    from ml.explain.segmentation import explain_segmentation
    from ml.predict import roi_from_mask, segment
    from ml.preprocessing import preprocess

    seg_dir = (
        _bundle_dir(args.seg_model, args.models_dir)
        if args.seg_model
        else _default_segmenter(args.models_dir)
    )
    seg_bundle = _load(seg_dir)
    seg_size = int(seg_bundle.model.inputs[0].shape[1])
    prob = segment(seg_bundle.model, preprocess(pixels, seg_size)[None, ..., None])[0]
    if seg_size != size:
        import cv2

        prob = cv2.resize(prob, (size, size), interpolation=cv2.INTER_LINEAR)
    seg = explain_segmentation(prob, seg_bundle.manifest.mask_threshold)
    seg_mask = seg["mask"]
    roi_bbox, roi_mask = roi_from_mask(seg_mask)
    seg_info = {
        "model": seg_bundle.manifest.key,
        "version": seg_bundle.manifest.version,
        "summary": seg["summary"],
        "roi_bbox": list(roi_bbox) if roi_bbox else None,
    }
    return seg_info, (roi_mask if roi_bbox is not None else None), roi_bbox, seg_mask


def _explain(
    bundle: Bundle,
    image: np.ndarray,
    args: argparse.Namespace,
    roi_mask: np.ndarray | None,
    seg_mask: np.ndarray | None,
) -> dict[str, Any]:
    """:func:`ml.explain.explain_image` with the options; bad choices become a CliError."""
    from ml.clierror import CliError
    from ml.explain import explain_image

    method = args.method or bundle.manifest.default_method
    if method == "attention" and not bundle.manifest.attention_layers:
        raise CliError(f"model {bundle.key} has no attention layers (attention needs hybrid_v3)")
    try:
        return explain_image(
            bundle,
            image,
            head=HEADS.get(args.head, args.head),
            method=method,
            focus=args.focus,
            roi_mask=roi_mask,
            class_index=args.class_index,
            faithfulness=not args.no_faithfulness,
            seg_mask=seg_mask,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _write_images(
    out: Path, image: np.ndarray, result: dict[str, Any], seg_mask: Any, roi_bbox: Any
) -> dict[str, Any]:
    """Draw the overlays and write them as PNGs into ``out``; returns file name -> RGB image."""
    import numpy as np

    from ml.explain import overlay

    arrays = result["arrays"]
    # A segmenter's own mask and ROI win over those of the focus segmenter.
    seg_mask = arrays.get("mask", seg_mask)
    roi_bbox = result.get("roi_bbox") or roi_bbox
    focus_bbox = result["focus_bbox"] if result["focus"] == "box" else None
    files = {
        "heatmap.png": overlay.explanation_overlay(
            image, arrays["heatmap"], mask=seg_mask, roi_bbox=roi_bbox, focus_bbox=focus_bbox
        )
    }
    if result["focus"] != "none":
        files["heatmap_focused.png"] = overlay.explanation_overlay(
            image, arrays["focused_heatmap"], roi_bbox=roi_bbox, focus_bbox=focus_bbox
        )
    if seg_mask is not None:
        files["segmentation.png"] = overlay.draw_box(
            overlay.draw_contours(overlay.to_rgb(image), seg_mask), roi_bbox
        )
    if "probability" in arrays:
        files["probability.png"] = overlay.probability_image(arrays["probability"])
    for name, rgb in files.items():
        write_atomic(out / name, overlay.to_png(np.asarray(rgb)))
    return files


def _summary(
    result: dict[str, Any],
    args: argparse.Namespace,
    loaded: LoadedImage,
    bundle: Bundle,
    seg_info: dict[str, Any] | None,
    files: dict[str, Any],
) -> dict[str, Any]:
    """The explanation's JSON part plus the input, the model and the files written."""
    from ml.explain import json_summary

    summary = json_summary(result)
    summary.update(
        image={
            "path": str(args.image),
            "format": loaded.format,
            "shape": list(loaded.pixels.shape),
        },
        display_name=bundle.manifest.name,
        intended_use=bundle.manifest.intended_use,
        segmentation_model=seg_info,
        files=sorted([*files, "summary.json"]),
    )
    return summary


def run(args: argparse.Namespace) -> int:
    """Run ``spondyscan explain``; writes the files and prints a short reading."""
    summary = explain_file(args)
    lines = [
        f"{summary['model']}: {summary['head']} = {summary['class_name']} "
        f"(p={summary['probability']:.3f}), {summary['method']}, focus {summary['focus']}, "
        f"{summary['inside_fraction']:.0%} of the heatmap inside the region",
    ]
    if summary.get("focus_note"):
        lines.append(f"note: {summary['focus_note']}")
    if summary.get("faithfulness"):
        f = summary["faithfulness"]
        lines.append(f"faithfulness {f['score']:+.2f}: {f['interpretation']}")
    lines.append(f"wrote {', '.join(summary['files'])} to {args.out}")
    lines.append(summary["notice"])
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
