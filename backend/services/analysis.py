"""Inference use cases: segment, classify, explain, and the whole pipeline (``run_analysis``).

Each use case validates its parameters, decodes the upload (format by content), runs the models
through the batched runner, renders the images, and then stores the result: files first (one
atomic folder rename), then the history rows and the audit event in one transaction. Any error
before the commit leaves neither files nor rows behind.

These functions know nothing about HTTP: the API calls them with an upload, and a batch-job
worker calls them the same way with a file from a job (``analysis_id``/``job_id`` let it make an
item idempotent).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.config import Settings
from backend.core.errors import IMAGE_ERROR_STATUS, AppError, BadInput, NotReady
from backend.inference import mappers
from backend.inference.registry import ModelEntry, ModelRegistry
from backend.inference.runner import InferenceRunner
from backend.models import Analysis, ModelResult
from backend.repositories import analyses as analyses_repo
from backend.repositories import audit
from backend.schemas.results import (
    AnalysisResult,
    ClassificationOutput,
    ClassifyResult,
    ExplainResult,
    ExplanationOutput,
    ImageInfo,
    ResultBase,
    SegmentationOutput,
    SegmentResult,
)
from backend.services.auth import Principal
from backend.services.history import artifact_url
from backend.services.runtime import Runtime
from backend.storage.artifacts import ArtifactStore

log = logging.getLogger(__name__)

HEAD_OUTPUTS = {"binary": "binary_output", "stage": "stage_output"}


@dataclass
class Upload:
    """An uploaded file's bytes and what the client said about it (never trusted for format)."""

    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass
class AnalysisContext:
    """What a use case needs: a session, settings, the artifact store and the warm models."""

    session: AsyncSession
    settings: Settings
    store: ArtifactStore
    registry: ModelRegistry | None
    runner: InferenceRunner | None

    @classmethod
    def from_runtime(cls, runtime: Runtime, session: AsyncSession) -> AnalysisContext:
        return cls(
            session=session,
            settings=runtime.settings,
            store=runtime.store,
            registry=runtime.registry,
            runner=runtime.runner,
        )

    def models(self) -> tuple[ModelRegistry, InferenceRunner]:
        if self.registry is None or self.runner is None:
            raise NotReady("The models are still loading; retry in a moment.")
        return self.registry, self.runner


@dataclass
class AnalysisOptions:
    """Options of the whole pipeline (the web app's upload, and each batch-job item)."""

    models: list[str] | None = None
    segmentation_model: str | None = None
    explain: bool = True
    method: str = "gradcam"
    faithfulness: bool = True
    frame: int | None = None


@dataclass
class Decoded:
    """A decoded upload: raw pixels, their 256x256 display version, model inputs per size."""

    pixels: np.ndarray
    format: str
    meta: dict[str, Any]
    sha256: str
    display: np.ndarray
    _inputs: dict[int, np.ndarray] = field(default_factory=dict)

    def input_for(self, size: int) -> np.ndarray:
        if size == self.display.shape[0]:
            return self.display
        if size not in self._inputs:
            from ml.preprocessing import preprocess

            self._inputs[size] = preprocess(self.pixels, size)
        return self._inputs[size]


class _Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}

    def mark(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.marks[name] = round((now - since) * 1000.0, 2)
        return now

    def total(self) -> dict[str, float]:
        return {**self.marks, "total": round((time.perf_counter() - self.t0) * 1000.0, 2)}


def split_keys(keys: list[str] | None) -> list[str] | None:
    """Model keys from repeated form fields, also accepting comma-separated values."""
    if not keys:
        return None
    out = [k.strip() for item in keys for k in str(item).split(",") if k.strip()]
    return out or None


def _decode_sync(data: bytes, frame: int | None, settings: Settings) -> Decoded:
    from ml.io import ImageError, read_image, require_content
    from ml.preprocessing import IMAGE_SIZE, preprocess

    try:
        loaded = read_image(
            data, frame=frame, max_pixels=settings.max_pixels, max_frames=settings.max_frames
        )
        require_content(loaded.pixels)
        display = preprocess(loaded.pixels, IMAGE_SIZE)
    except ImageError as exc:
        raise BadInput(
            exc.message, code=exc.code, status_code=IMAGE_ERROR_STATUS.get(exc.code, 400)
        ) from exc
    except (ValueError, TypeError, MemoryError) as exc:
        raise BadInput(
            f"The image could not be turned into a grayscale slice ({exc}).",
            code="unsupported_format",
            status_code=415,
        ) from exc
    return Decoded(
        pixels=loaded.pixels,
        format=loaded.format,
        meta=dict(loaded.meta),
        sha256=hashlib.sha256(data).hexdigest(),
        display=display,
    )


async def decode_upload(ctx: AnalysisContext, upload: Upload, frame: int | None) -> Decoded:
    """Decode off the event loop; bad input becomes a BadInput with the reader's code."""
    if len(upload.data) > ctx.settings.max_upload_bytes:
        raise AppError("The upload is larger than the limit.", code="too_large", status_code=413)
    if frame is not None and frame < 0:
        raise BadInput("The frame index must be 0 or more.", code="bad_frame")
    return await asyncio.to_thread(_decode_sync, upload.data, frame, ctx.settings)


def _image_info(decoded: Decoded, upload: Upload) -> ImageInfo:
    h, w = decoded.pixels.shape[:2]
    frame = decoded.meta.get(
        "frame", decoded.meta.get("slice_index", decoded.meta.get("sagittal_index"))
    )
    return ImageInfo(
        format=decoded.format,
        width=int(w),
        height=int(h),
        sha256=decoded.sha256,
        filename=(upload.filename or None) and str(upload.filename)[:255],
        frame=int(frame) if frame is not None else None,
    )


# ----------------------------------------------------------------------------- model steps


@dataclass
class _Segmentation:
    entry: ModelEntry
    prob: np.ndarray  # display size
    mask: np.ndarray  # uint8 0/1, display size
    bbox: Any
    roi_mask: np.ndarray | None


async def _segment(runner: InferenceRunner, entry: ModelEntry, decoded: Decoded) -> _Segmentation:
    prob = await runner.segment(entry, decoded.input_for(entry.input_size))

    def post() -> _Segmentation:
        from ml.predict import roi_from_mask

        prob_d = mappers.to_display(prob)
        mask = (prob_d >= entry.mask_threshold).astype(np.uint8)
        bbox, roi_mask = roi_from_mask(mask)
        return _Segmentation(entry, prob_d, mask, bbox, roi_mask if bbox is not None else None)

    return await asyncio.to_thread(post)


def _segmentation_files(
    seg: _Segmentation, decoded: Decoded, analysis_id: uuid.UUID, files: dict[str, bytes]
) -> SegmentationOutput:
    from backend.inference import overlays

    files["mask.png"] = mappers.png((seg.mask * 255).astype(np.uint8))
    files["segmentation.png"] = overlays.segmentation_overlay(decoded.display, seg.mask, seg.bbox)
    return mappers.segmentation(
        seg.entry,
        seg.prob,
        seg.mask,
        seg.bbox,
        mask_url=artifact_url(analysis_id, "mask.png"),
        overlay_url=artifact_url(analysis_id, "segmentation.png"),
    )


async def _classify_all(
    runner: InferenceRunner, entries: list[ModelEntry], decoded: Decoded
) -> list[ClassificationOutput]:
    outs = await asyncio.gather(
        *(runner.classify(e, decoded.input_for(e.input_size)) for e in entries)
    )
    return [
        mappers.classification(e, o.p_status, o.p_stage) for e, o in zip(entries, outs, strict=True)
    ]


def _check_explain(entry: ModelEntry, head: str, method: str, class_index: int | None) -> None:
    """Refuse impossible explanation requests before any work is done."""
    if method == "attention" and not entry.manifest.get("attention_layers"):
        raise BadInput(
            f"Model {entry.key!r} has no attention layers; use gradcam, gradcam++ or eigencam.",
            code="unsupported_method",
        )
    n_classes = len(entry.stage_names if head == "stage" else entry.status_names)
    if class_index is not None and not 0 <= class_index < n_classes:
        raise BadInput(
            f"class_index must be between 0 and {n_classes - 1} for the {head} head.",
            code="bad_class_index",
        )


async def _explain(
    ctx: AnalysisContext,
    entry: ModelEntry,
    decoded: Decoded,
    analysis_id: uuid.UUID,
    files: dict[str, bytes],
    *,
    head: str,
    method: str,
    focus: str,
    class_index: int | None,
    seg: _Segmentation | None,
    faithfulness: bool,
    per_model: bool = False,
) -> ExplanationOutput:
    _, runner = ctx.models()
    image = decoded.input_for(entry.input_size)
    output = HEAD_OUTPUTS[head]
    cam = await runner.cam(entry, image, head=output, method=method, class_index=class_index)
    faith = None
    if faithfulness:
        from ml.explain.faithfulness import deletion_insertion

        names = entry.stage_names if head == "stage" else entry.status_names
        faith = await runner.call(
            entry,
            deletion_insertion,
            entry.model,
            image,
            cam.heatmap,
            output,
            cam.class_index,
            steps=ctx.settings.faithfulness_steps,
            n_random=1,
            class_names=names,
        )

    def render() -> tuple[ExplanationOutput, dict[str, bytes]]:
        from backend.inference import overlays
        from ml.explain.focus import focus_heatmap

        heat = np.clip(mappers.to_display(cam.heatmap), 0.0, 1.0)
        roi_mask = seg.roi_mask if seg is not None else None
        focused = focus_heatmap(heat, focus, roi_mask, fallback="box")
        # One file set per model in a full analysis; plain names for a single explanation.
        base = f"{mappers.slug(entry.key)}-{head}" if per_model else head
        names = {
            "heatmap": f"heatmap-{base}.png",
            "overlay": f"gradcam-{base}.png",
            "focused": f"focused-{base}.png",
        }
        out_files = {
            names["heatmap"]: overlays.heatmap_image(heat),
            names["overlay"]: overlays.heatmap_overlay(decoded.display, heat),
        }
        has_focus = focused.focus != "none"
        if has_focus:
            by_roi = focused.focus == "segmentation"
            out_files[names["focused"]] = overlays.heatmap_overlay(
                decoded.display,
                focused.focused,
                focus_bbox=None if by_roi else focused.bbox,
                roi_bbox=seg.bbox if by_roi and seg is not None else None,
                mask=seg.mask if by_roi and seg is not None else None,
            )
        explanation = ExplanationOutput(
            model=mappers.model_ref(entry),
            head=head,  # type: ignore[arg-type]
            method=method,  # type: ignore[arg-type]
            focus=focused.focus,  # type: ignore[arg-type]
            class_index=cam.class_index,
            class_label=mappers.class_label(entry, head, cam.class_index),
            probability=float(cam.prob),
            inside_fraction=float(focused.inside_fraction),
            focus_note=focused.note,
            roi=mappers.box(focused.bbox),
            faithfulness=mappers.faithfulness(faith),
            heatmap_url=artifact_url(analysis_id, names["heatmap"]),
            overlay_url=artifact_url(analysis_id, names["overlay"]),
            focused_overlay_url=artifact_url(analysis_id, names["focused"]) if has_focus else None,
            label_provenance=mappers.provenance(entry),
        )
        return explanation, out_files

    explanation, out_files = await asyncio.to_thread(render)
    files.update(out_files)
    return explanation


# ----------------------------------------------------------------------------- persistence


def _headline(classifications: list[ClassificationOutput]) -> dict[str, Any]:
    if not classifications:
        return {}
    first = classifications[0]
    return {
        "as_status": first.as_status,
        "as_confidence": first.as_probability,
        "stage": first.stage,
        "stage_confidence": first.stage_probability,
    }


def _model_rows(
    segmentation: SegmentationOutput | None,
    classifications: list[ClassificationOutput],
    explained: list[ModelEntry],
    registry: ModelRegistry,
) -> list[ModelResult]:
    rows: list[ModelResult] = []
    seen: set[str] = set()
    if segmentation is not None:
        m = segmentation.model
        rows.append(ModelResult(model_key=m.key, model_version=m.version, task="segmentation"))
        seen.add(m.key)
    for c in classifications:
        rows.append(
            ModelResult(
                model_key=c.model.key,
                model_version=c.model.version,
                task="classification",
                as_status=c.as_status,
                as_confidence=c.as_probability,
                stage=c.stage,
                stage_confidence=c.stage_probability,
            )
        )
        seen.add(c.model.key)
    for e in explained:
        if e.key not in seen:
            rows.append(ModelResult(model_key=e.key, model_version=e.version, task=e.task))
            seen.add(e.key)
    return rows


async def _store(
    ctx: AnalysisContext,
    principal: Principal,
    result: ResultBase,
    *,
    kind: str,
    decoded: Decoded,
    upload: Upload,
    files: dict[str, bytes],
    used: list[ModelEntry],
    model_rows: list[ModelResult],
    headline: dict[str, Any],
    paths: dict[str, str | None],
    job_id: str | None,
) -> None:
    """Files first (atomic folder rename), then rows and audit event in one transaction."""
    analysis_id = result.id
    files = {"input.png": mappers.png(decoded.display), **files}
    if await asyncio.to_thread(ctx.store.exists, analysis_id) and (
        await analyses_repo.get_analysis(ctx.session, analysis_id) is None
    ):
        # Files without a row: left by a crash between the rename and the commit (a job item
        # being retried). They are ours to replace.
        await asyncio.to_thread(ctx.store.delete, analysis_id)
    if job_id is not None:
        # A job item's id is fixed and claimed by one worker at a time: staging folders under it
        # are an earlier attempt's, whose worker died before its rename.
        await asyncio.to_thread(ctx.store.discard_staged, analysis_id)
    staged = ctx.store.stage(analysis_id)
    committed = False
    try:

        def write() -> None:
            for name, data in files.items():
                staged.add(name, data)
            staged.commit()

        await asyncio.to_thread(write)
        row = Analysis(
            id=analysis_id,
            user_id=principal.user_id,
            kind=kind,
            created_at=result.created_at,
            image_path="input.png",
            image_format=decoded.format,
            input_sha256=decoded.sha256,
            original_filename=result.image.filename,
            mask_path=paths.get("mask"),
            gradcam_path=paths.get("gradcam"),
            segmentation_overlay_path=paths.get("segmentation_overlay"),
            models=[e.key for e in used],
            model_versions={e.key: e.version for e in used},
            label_provenance={e.key: e.label_provenance for e in used},
            timings=result.timings_ms,
            result=result.model_dump(mode="json"),
            job_id=job_id,
            **headline,
        )
        await analyses_repo.add_analysis(ctx.session, row, model_rows)
        await audit.record(
            ctx.session,
            action=f"inference.{kind}",
            actor=principal.actor,
            user_id=principal.user_id,
            target=str(analysis_id),
            detail={
                "models": {e.key: e.version for e in used},
                "input_sha256": decoded.sha256,
                "format": decoded.format,
                **({"job_id": job_id} if job_id else {}),
            },
        )
        await ctx.session.commit()
        committed = True
    finally:
        if not committed:
            await ctx.session.rollback()
            await asyncio.to_thread(staged.discard)


def _new_id(analysis_id: uuid.UUID | None) -> tuple[uuid.UUID, datetime]:
    return analysis_id or uuid.uuid4(), datetime.now(UTC)


# ----------------------------------------------------------------------------- use cases


async def segment_image(
    ctx: AnalysisContext,
    principal: Principal,
    upload: Upload,
    *,
    model: str | None = None,
    frame: int | None = None,
    analysis_id: uuid.UUID | None = None,
    job_id: str | None = None,
) -> SegmentResult:
    """Segment one image: mask, probability summary, lumbosacral ROI box."""
    registry, runner = ctx.models()
    timer = _Timer()
    entry = registry.resolve([model] if model else None, "segmentation")[0]
    t = time.perf_counter()
    decoded = await decode_upload(ctx, upload, frame)
    t = timer.mark("decode", t)
    seg = await _segment(runner, entry, decoded)
    t = timer.mark("segment", t)
    aid, created = _new_id(analysis_id)
    files: dict[str, bytes] = {}
    out = await asyncio.to_thread(_segmentation_files, seg, decoded, aid, files)
    timer.mark("render", t)
    result = SegmentResult(
        id=aid,
        created_at=created,
        image=_image_info(decoded, upload),
        image_url=artifact_url(aid, "input.png"),
        segmentation=out,
        timings_ms=timer.total(),
    )
    await _store(
        ctx,
        principal,
        result,
        kind="segment",
        decoded=decoded,
        upload=upload,
        files=files,
        used=[entry],
        model_rows=_model_rows(out, [], [], registry),
        headline={},
        paths={"mask": "mask.png", "segmentation_overlay": "segmentation.png"},
        job_id=job_id,
    )
    return result


async def classify_image(
    ctx: AnalysisContext,
    principal: Principal,
    upload: Upload,
    *,
    models: list[str] | None = None,
    frame: int | None = None,
    analysis_id: uuid.UUID | None = None,
    job_id: str | None = None,
) -> ClassifyResult:
    """AS status and stage from one or more classifiers, side by side."""
    registry, runner = ctx.models()
    timer = _Timer()
    entries = registry.resolve(
        split_keys(models), "classification", limit=ctx.settings.max_models_per_request
    )
    t = time.perf_counter()
    decoded = await decode_upload(ctx, upload, frame)
    t = timer.mark("decode", t)
    classifications = await _classify_all(runner, entries, decoded)
    timer.mark("classify", t)
    aid, created = _new_id(analysis_id)
    result = ClassifyResult(
        id=aid,
        created_at=created,
        image=_image_info(decoded, upload),
        image_url=artifact_url(aid, "input.png"),
        classifications=classifications,
        timings_ms=timer.total(),
    )
    await _store(
        ctx,
        principal,
        result,
        kind="classify",
        decoded=decoded,
        upload=upload,
        files={},
        used=entries,
        model_rows=_model_rows(None, classifications, [], registry),
        headline=_headline(classifications),
        paths={},
        job_id=job_id,
    )
    return result


async def explain_image(
    ctx: AnalysisContext,
    principal: Principal,
    upload: Upload,
    *,
    model: str | None = None,
    head: str = "binary",
    method: str = "gradcam",
    focus: str = "segmentation",
    class_index: int | None = None,
    faithfulness: bool = True,
    frame: int | None = None,
    analysis_id: uuid.UUID | None = None,
    job_id: str | None = None,
) -> ExplainResult:
    """A heatmap for one classifier head, focused, with overlays and a faithfulness score."""
    registry, runner = ctx.models()
    timer = _Timer()
    entry = registry.resolve([model] if model else None, "classification")[0]
    _check_explain(entry, head, method, class_index)
    seg_entry = registry.default_for("segmentation") if focus == "segmentation" else None
    t = time.perf_counter()
    decoded = await decode_upload(ctx, upload, frame)
    t = timer.mark("decode", t)
    seg = await _segment(runner, seg_entry, decoded) if seg_entry is not None else None
    t = timer.mark("segment", t)
    aid, created = _new_id(analysis_id)
    files: dict[str, bytes] = {}
    explanation = await _explain(
        ctx,
        entry,
        decoded,
        aid,
        files,
        head=head,
        method=method,
        focus=focus,
        class_index=class_index,
        seg=seg,
        faithfulness=faithfulness,
    )
    timer.mark("explain", t)
    result = ExplainResult(
        id=aid,
        created_at=created,
        image=_image_info(decoded, upload),
        image_url=artifact_url(aid, "input.png"),
        explanation=explanation,
        timings_ms=timer.total(),
    )
    used = [entry] + ([seg_entry] if seg_entry is not None else [])
    await _store(
        ctx,
        principal,
        result,
        kind="explain",
        decoded=decoded,
        upload=upload,
        files=files,
        used=used,
        model_rows=_model_rows(None, [], used, registry),
        headline={},
        paths={"gradcam": explanation.overlay_url.rsplit("/", 1)[-1]},
        job_id=job_id,
    )
    return result


async def run_analysis(
    ctx: AnalysisContext,
    principal: Principal,
    upload: Upload,
    options: AnalysisOptions | None = None,
    *,
    analysis_id: uuid.UUID | None = None,
    job_id: str | None = None,
) -> AnalysisResult:
    """The whole pipeline: segment, classify with every chosen model, explain each decision.

    Explanations use the segmentation's lumbosacral ROI as their focus (the design's fixed box
    when no structure was found). Used by POST /analyses and by batch-job items.
    """
    opts = options or AnalysisOptions()
    registry, runner = ctx.models()
    timer = _Timer()
    classifiers = registry.resolve(
        split_keys(opts.models), "classification", limit=ctx.settings.max_models_per_request
    )
    seg_entry = (
        registry.resolve([opts.segmentation_model], "segmentation")[0]
        if opts.segmentation_model
        else registry.default_for("segmentation")
    )
    if opts.explain:
        for entry in classifiers:
            _check_explain(entry, "binary", opts.method, None)
    t = time.perf_counter()
    decoded = await decode_upload(ctx, upload, opts.frame)
    t = timer.mark("decode", t)
    aid, created = _new_id(analysis_id)
    files: dict[str, bytes] = {}

    async def do_segment() -> tuple[_Segmentation | None, SegmentationOutput | None]:
        if seg_entry is None:
            return None, None
        seg = await _segment(runner, seg_entry, decoded)
        out = await asyncio.to_thread(_segmentation_files, seg, decoded, aid, files)
        return seg, out

    # Segmentation and classification do not depend on each other: run them together.
    (seg, seg_out), classifications = await asyncio.gather(
        do_segment(), _classify_all(runner, classifiers, decoded)
    )
    t = timer.mark("segment_classify", t)
    explanations: list[ExplanationOutput] = []
    if opts.explain:
        explanations = list(
            await asyncio.gather(
                *(
                    _explain(
                        ctx,
                        e,
                        decoded,
                        aid,
                        files,
                        head="binary",
                        method=opts.method,
                        focus="segmentation",
                        class_index=None,
                        seg=seg,
                        faithfulness=opts.faithfulness,
                        per_model=True,
                    )
                    for e in classifiers
                )
            )
        )
        timer.mark("explain", t)
    result = AnalysisResult(
        id=aid,
        created_at=created,
        image=_image_info(decoded, upload),
        image_url=artifact_url(aid, "input.png"),
        segmentation=seg_out,
        classifications=classifications,
        explanations=explanations,
        timings_ms=timer.total(),
    )
    used = ([seg_entry] if seg_entry is not None else []) + classifiers
    gradcam = (
        (explanations[0].focused_overlay_url or explanations[0].overlay_url)
        if explanations
        else None
    )
    await _store(
        ctx,
        principal,
        result,
        kind="analysis",
        decoded=decoded,
        upload=upload,
        files=files,
        used=used,
        model_rows=_model_rows(seg_out, classifications, [], registry),
        headline=_headline(classifications),
        paths={
            "mask": "mask.png" if seg_out else None,
            "segmentation_overlay": "segmentation.png" if seg_out else None,
            "gradcam": gradcam.rsplit("/", 1)[-1] if gradcam else None,
        },
        job_id=job_id,
    )
    return result
