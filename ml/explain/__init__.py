"""Explanations: heatmaps, focus, attention rollout, faithfulness, segmentation confidence.

Pure functions over arrays (drawing lives in :mod:`ml.explain.overlay`). The one-call entry
point is :func:`explain_image`. Importing this package does not import TensorFlow.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ml import RESEARCH_USE_NOTICE
from ml.explain.focus import apply_focus, design_box, focus_heatmap
from ml.explain.gradcam import compute_cam, find_last_conv_layer, gradcam, resolve_head
from ml.manifest import Manifest
from ml.vocab import AS_STATUS_NAMES, CAM_METHODS, FOCUS_MODES, STAGE_NAMES

ALL_METHODS = CAM_METHODS
_DEFAULT_CLASS_NAMES = {"binary_output": list(AS_STATUS_NAMES), "stage_output": list(STAGE_NAMES)}

__all__ = [
    "ALL_METHODS",
    "FOCUS_MODES",
    "apply_focus",
    "compute_cam",
    "design_box",
    "explain_image",
    "focus_heatmap",
    "gradcam",
    "json_summary",
    "warm_up",
]


def _unpack(bundle_or_model: Any) -> tuple[Any, Manifest | None]:
    if hasattr(bundle_or_model, "model") and hasattr(bundle_or_model, "manifest"):
        return bundle_or_model.model, bundle_or_model.manifest
    return bundle_or_model, None


def _model_image(image2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The model input for one image: preprocessed unless it already is (float, sized, [0, 1])."""
    img = np.asarray(image2d)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    ready = (
        img.ndim == 2
        and img.shape == tuple(size)
        and np.issubdtype(img.dtype, np.floating)
        and np.isfinite(img).all()
        and float(img.min(initial=0.0)) >= 0.0
        and float(img.max(initial=0.0)) <= 1.0
    )
    if ready:
        return img.astype(np.float32)
    from ml.preprocessing import preprocess

    if size[0] != size[1]:
        raise ValueError(f"non-square model input {size} is not supported")
    return preprocess(img, size[0])


def _pick_head(model: Any, head: str | None) -> str | None:
    """The default classification head falls back to a segmenter's only output."""
    from ml.explain.gradcam import output_names

    names = output_names(model)
    default = head in (None, "binary_output", "binary")
    if default and "binary_output" not in names and len(names) == 1:
        return None
    return head


def _sized(mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """A mask on the model's input grid (nearest-neighbour resize when it is not)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 0]
    if m.shape != size:
        import cv2

        m = cv2.resize(
            (m > 0).astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST
        )
    return m


def _class_names(manifest: Manifest | None, head: str, task: str, k: int) -> list[str]:
    if task == "segmentation":
        return ["background", "foreground"]
    names = manifest.class_names(head) if manifest else _DEFAULT_CLASS_NAMES.get(head)
    if isinstance(names, list) and len(names) == k:
        return [str(n) for n in names]
    return [f"class {i}" for i in range(k)]


def explain_image(
    bundle_or_model: Any,
    image2d: np.ndarray,
    head: str | None = "binary_output",
    method: str = "gradcam",
    focus: str = "none",
    roi_mask: np.ndarray | None = None,
    class_index: int | None = None,
    faithfulness: bool = True,
    *,
    layer: str | None = None,
    seg_mask: np.ndarray | None = None,
    steps: int = 16,
    n_random: int = 3,
    baseline: str = "blur",
) -> dict[str, Any]:
    """Explain one decision of one model for one image.

    Args:
        bundle_or_model: a loaded :class:`ml.bundle.Bundle` (manifest gives the Grad-CAM layer,
            class names, attention layers, label provenance) or a bare Keras model.
        image2d: the slice: already preprocessed (float (S, S) in [0, 1]) or raw pixels, which
            go through :func:`ml.preprocessing.preprocess`.
        head: ``binary_output``/``stage_output`` (or ``binary``/``stage``); a segmenter's only
            output is used when the model has no such head.
        method: ``gradcam``, ``gradcam++``, ``eigencam`` or ``attention`` (hybrid v3 rollout).
        focus: ``none``, ``box`` or ``segmentation``.
        roi_mask: ROI for the segmentation focus (e.g. from ``ml.predict.roi_from_mask``);
            resized (nearest) to the model's input size when it differs.
        class_index: class to explain; ``None`` = the predicted class.
        faithfulness: compute deletion/insertion AUC and the score (classifier heads).
        layer: target layer; default the manifest's ``gradcam_layer`` or the last conv layer.
        seg_mask: a structure mask to derive the ROI from when ``roi_mask`` is not given.
        steps: faithfulness steps.
        n_random: random orders for the faithfulness baseline.
        baseline: faithfulness baseline ("blur", "mean", "zero").

    Returns:
        A dict whose entries are JSON-ready except ``arrays``, which holds ``image``,
        ``heatmap`` (unfocused), ``focused_heatmap``, ``region`` (bool focus region) and, for
        segmenters, ``mask`` and ``probability`` (all (S, S) numpy arrays). See
        :func:`json_summary` for the JSON part alone.
    """
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {ALL_METHODS}")
    if focus not in FOCUS_MODES:
        raise ValueError(f"unknown focus {focus!r}; choose one of {FOCUS_MODES}")
    t0 = time.perf_counter()
    model, manifest = _unpack(bundle_or_model)
    size = (int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2]))
    image = _model_image(image2d, size)
    head = _pick_head(model, head)
    _, head_name, task = resolve_head(model, head)
    timing: dict[str, float] = {}

    cam_layer = layer or (manifest and manifest.gradcam_layer) or find_last_conv_layer(model)
    batch = image[None, ..., None]
    output = None
    if method == "attention":
        from ml.explain.attention import attention_rollout
        from ml.explain.faithfulness import predict_probabilities

        ro = attention_rollout(model, batch, manifest.attention_layers if manifest else None)
        heatmap = ro.heatmaps[0]
        # Rollout carries no class: class and probability come from the explained head.
        probs = predict_probabilities(model, batch, head_name)[0]
        ci = int(np.argmax(probs)) if class_index is None else int(class_index)
        used_layer: str | list[str] = ro.layers
        score_kind = "attention_rollout"
    else:
        cam = compute_cam(model, batch, cam_layer, head_name, class_index, method)
        heatmap = cam.heatmaps[0]
        probs = cam.probabilities[0]
        ci = int(cam.class_index[0])
        output = None if cam.output is None else cam.output[0]
        used_layer = cam.layer
        score_kind = cam.score_kind
    timing["heatmap_ms"] = (time.perf_counter() - t0) * 1000.0
    names = _class_names(manifest, head_name, task, len(probs))

    arrays: dict[str, Any] = {"image": image, "heatmap": heatmap}
    seg_summary = None
    if task == "segmentation" and output is not None:
        from ml.explain.segmentation import explain_segmentation

        thr = manifest.mask_threshold if manifest else 0.5
        seg = explain_segmentation(output, thr)
        arrays["mask"], arrays["probability"] = seg["mask"], seg["probability"]
        seg_summary = seg["summary"]
        if seg_mask is None:
            seg_mask = seg["mask"]

    roi_mask, seg_mask = _sized(roi_mask, size), _sized(seg_mask, size)
    roi_bbox = None
    if roi_mask is None and seg_mask is not None and focus == "segmentation":
        from ml.roi import roi_from_segmentation

        roi_bbox, roi_mask = roi_from_segmentation(seg_mask)
    fres = focus_heatmap(heatmap, focus, roi_mask)
    if roi_bbox is None and fres.focus == "segmentation":
        roi_bbox = fres.bbox
    arrays["focused_heatmap"] = fres.focused
    arrays["region"] = fres.region

    faith = None
    if faithfulness and task == "classification":
        t1 = time.perf_counter()
        extra = {"focused": fres.focused} if fres.focus != "none" else None
        faith = _faithfulness(
            model, image, heatmap, head_name, ci, names, steps, n_random, baseline, extra
        )
        timing["faithfulness_ms"] = (time.perf_counter() - t1) * 1000.0
    timing["total_ms"] = (time.perf_counter() - t0) * 1000.0

    return {
        "model": manifest.key if manifest else None,
        "version": manifest.version if manifest else None,
        "architecture": manifest.architecture if manifest else None,
        "task": task,
        "head": head_name,
        "method": method,
        "layer": used_layer,
        "score_kind": score_kind,
        "class_index": ci,
        "class_name": names[ci] if ci < len(names) else f"class {ci}",
        "probability": float(probs[ci]),
        "probabilities": {n: float(p) for n, p in zip(names, probs, strict=False)},
        "focus_requested": focus,
        "focus": fres.focus,
        "focus_note": fres.note,
        "focus_bbox": list(fres.bbox) if fres.bbox else None,
        "roi_bbox": list(roi_bbox) if roi_bbox else None,
        "inside_fraction": fres.inside_fraction,
        "faithfulness": faith,
        "segmentation": seg_summary,
        "label_provenance": manifest.label_provenance.model_dump() if manifest else None,
        "notice": RESEARCH_USE_NOTICE,
        "timing_ms": {k: round(v, 1) for k, v in timing.items()},
        "arrays": arrays,
    }


def _faithfulness(model, image, heatmap, head, ci, names, steps, n_random, baseline, extra):
    from ml.explain.faithfulness import deletion_insertion

    res = deletion_insertion(
        model,
        image,
        heatmap,
        head=head,
        class_index=ci,
        steps=steps,
        n_random=n_random,
        baseline=baseline,
        class_names=names,
        extra_heatmaps=extra,
    )
    out = {
        k: res[k]
        for k in (
            "score",
            "interpretation",
            "deletion_auc",
            "insertion_auc",
            "random_deletion_auc",
            "steps",
            "baseline",
            "n_random",
            "n_forward",
            "fractions",
            "deletion_curve",
            "insertion_curve",
            "random_deletion_curve",
        )
    }
    if res["extra"].get("focused"):
        f = res["extra"]["focused"]
        out["focused"] = {k: f[k] for k in ("score", "deletion_auc", "interpretation")}
    return out


def warm_up(
    bundle_or_model: Any, heads: tuple[str | None, ...] | None = None, method: str = "gradcam"
) -> None:
    """Trace the compiled functions an explanation needs, so the first request is fast.

    Args:
        bundle_or_model: a loaded bundle or a Keras model.
        heads: heads to warm (default: every output); one CAM graph serves them all.
        method: the method to warm ("attention" also warms the classifier's forward pass).
    """
    model, _ = _unpack(bundle_or_model)
    size = (int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2]))
    image = np.zeros(size, np.float32)
    from ml.explain.gradcam import output_names

    for head in heads or tuple(output_names(model)):
        explain_image(bundle_or_model, image, head=head, method=method, faithfulness=True, steps=1,
                      n_random=0)  # fmt: skip


def json_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready part of an :func:`explain_image` result (everything but ``arrays``)."""
    return {k: v for k, v in result.items() if k != "arrays"}
