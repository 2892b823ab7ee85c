"""Explanations: heatmaps, focus, attention rollout, faithfulness, segmentation confidence.

Pure functions over arrays (drawing lives in :mod:`ml.explain.overlay`). The one-call entry
point is :func:`explain_image`. Importing this package does not import TensorFlow.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from ml import RESEARCH_USE_NOTICE
from ml.explain.focus import FocusResult, apply_focus, design_box, focus_heatmap
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


class _Heatmap(NamedTuple):
    """The unfocused heatmap of one explained decision and what came with it."""

    heatmap: np.ndarray  # (S, S) in [0, 1]
    probs: np.ndarray  # (K,) probabilities of the explained head
    class_index: int
    class_names: list[str]
    head: str
    task: str
    layer: str | list[str]  # the attention layers for rollout
    score_kind: str
    output: np.ndarray | None  # a segmenter's (S, S, 1) probability map


def _check_choices(method: str, focus: str) -> None:
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {ALL_METHODS}")
    if focus not in FOCUS_MODES:
        raise ValueError(f"unknown focus {focus!r}; choose one of {FOCUS_MODES}")


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _explained_heatmap(
    model: Any,
    manifest: Manifest | None,
    image: np.ndarray,
    head: str | None,
    method: str,
    layer: str | None,
    class_index: int | None,
) -> _Heatmap:
    """Heatmap, class and probabilities of one head's decision for one model-ready image."""
    _, head_name, task = resolve_head(model, _pick_head(model, head))
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
    names = _class_names(manifest, head_name, task, len(probs))
    return _Heatmap(heatmap, probs, ci, names, head_name, task, used_layer, score_kind, output)


def _segmentation_part(
    heat: _Heatmap, manifest: Manifest | None, seg_mask: np.ndarray | None
) -> tuple[dict[str, Any] | None, dict[str, np.ndarray], np.ndarray | None]:
    """A segmenter's (summary, mask and probability arrays, structure mask for the focus).

    For other models (or no output): no summary, no arrays, and ``seg_mask`` unchanged.
    """
    if heat.task != "segmentation" or heat.output is None:
        return None, {}, seg_mask
    from ml.explain.segmentation import explain_segmentation

    thr = manifest.mask_threshold if manifest else 0.5
    seg = explain_segmentation(heat.output, thr)
    arrays = {"mask": seg["mask"], "probability": seg["probability"]}
    return seg["summary"], arrays, seg["mask"] if seg_mask is None else seg_mask


def _focused(
    heatmap: np.ndarray, focus: str, roi_mask: np.ndarray | None, seg_mask: np.ndarray | None
) -> tuple[FocusResult, Any]:
    """The focus result and the ROI box (from the structure mask, or the focus region)."""
    roi_bbox = None
    if roi_mask is None and seg_mask is not None and focus == "segmentation":
        from ml.roi import roi_from_segmentation

        roi_bbox, roi_mask = roi_from_segmentation(seg_mask)
    fres = focus_heatmap(heatmap, focus, roi_mask)
    if roi_bbox is None and fres.focus == "segmentation":
        roi_bbox = fres.bbox
    return fres, roi_bbox


def _model_fields(manifest: Manifest | None) -> dict[str, Any]:
    return {
        "model": manifest.key if manifest else None,
        "version": manifest.version if manifest else None,
        "architecture": manifest.architecture if manifest else None,
    }


def _decision_fields(heat: _Heatmap, method: str) -> dict[str, Any]:
    ci, names, probs = heat.class_index, heat.class_names, heat.probs
    return {
        "task": heat.task,
        "head": heat.head,
        "method": method,
        "layer": heat.layer,
        "score_kind": heat.score_kind,
        "class_index": ci,
        "class_name": names[ci] if ci < len(names) else f"class {ci}",
        "probability": float(probs[ci]),
        "probabilities": {n: float(p) for n, p in zip(names, probs, strict=False)},
    }


def _focus_fields(focus: str, fres: FocusResult, roi_bbox: Any) -> dict[str, Any]:
    return {
        "focus_requested": focus,
        "focus": fres.focus,
        "focus_note": fres.note,
        "focus_bbox": list(fres.bbox) if fres.bbox else None,
        "roi_bbox": list(roi_bbox) if roi_bbox else None,
        "inside_fraction": fres.inside_fraction,
    }


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
    _check_choices(method, focus)
    t0 = time.perf_counter()
    model, manifest = _unpack(bundle_or_model)
    size = (int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2]))
    image = _model_image(image2d, size)
    heat = _explained_heatmap(model, manifest, image, head, method, layer, class_index)
    timing = {"heatmap_ms": _ms_since(t0)}
    seg_summary, seg_arrays, seg_mask = _segmentation_part(heat, manifest, seg_mask)
    fres, roi_bbox = _focused(heat.heatmap, focus, _sized(roi_mask, size), _sized(seg_mask, size))
    faith = None
    if faithfulness and heat.task == "classification":
        t1 = time.perf_counter()
        faith = _faithfulness(model, image, heat, fres, steps, n_random, baseline)
        timing["faithfulness_ms"] = _ms_since(t1)
    timing["total_ms"] = _ms_since(t0)
    return {
        **_model_fields(manifest),
        **_decision_fields(heat, method),
        **_focus_fields(focus, fres, roi_bbox),
        "faithfulness": faith,
        "segmentation": seg_summary,
        "label_provenance": manifest.label_provenance.model_dump() if manifest else None,
        "notice": RESEARCH_USE_NOTICE,
        "timing_ms": {k: round(v, 1) for k, v in timing.items()},
        "arrays": {
            "image": image,
            "heatmap": heat.heatmap,
            **seg_arrays,
            "focused_heatmap": fres.focused,
            "region": fres.region,
        },
    }


def _faithfulness(
    model: Any,
    image: np.ndarray,
    heat: _Heatmap,
    fres: FocusResult,
    steps: int,
    n_random: int,
    baseline: str,
) -> dict[str, Any]:
    """The faithfulness part of the summary; a focused map is scored alongside the heatmap."""
    from ml.explain.faithfulness import deletion_insertion

    extra = {"focused": fres.focused} if fres.focus != "none" else None
    res = deletion_insertion(
        model,
        image,
        heat.heatmap,
        head=heat.head,
        class_index=heat.class_index,
        steps=steps,
        n_random=n_random,
        baseline=baseline,
        class_names=heat.class_names,
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
