"""Inference use cases: segment, classify, explain, and the whole pipeline (``run_analysis``).

All four share one skeleton (:func:`_run`): decode the upload (format by content), do the
use case's model work through the batched runner (:mod:`backend.services.pipeline`), draw its
pictures (:mod:`backend.services.rendering`), then store files and rows
(:mod:`backend.services.result_store`). Any error before the commit leaves nothing behind.

These functions know nothing about HTTP: the API calls them with an upload, and a batch-job
worker calls them the same way with a file from a job (``analysis_id``/``job_id`` let it make an
item idempotent).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.config import Settings
from backend.core.errors import NotReady, TooManyRequests
from backend.inference import mappers
from backend.inference.registry import ModelEntry, ModelRegistry
from backend.inference.runner import InferenceRunner
from backend.models import ModelResult
from backend.runtime import Guards, Runtime
from backend.schemas.jobs import JobOptions
from backend.schemas.results import (
    AnalysisResult,
    ClassificationOutput,
    ClassifyResult,
    DomainInfo,
    ExplainResult,
    ExplanationOutput,
    ResultBase,
    SegmentationOutput,
    SegmentResult,
)
from backend.schemas.studies import StudyOptions
from backend.services.auth import Principal
from backend.services.pipeline import (
    Decoded,
    Explanation,
    Segmentation,
    Timer,
    Upload,
    check_explain,
    classify_all,
    decode_upload,
    explain,
    score_explanation,
    segment,
)
from backend.services.rendering import artifact_url, explanation_files, segmentation_files
from backend.services.result_store import headline, model_rows, store_result
from backend.services.rule_features import explain_rule_features
from backend.storage.artifacts import ArtifactStore

if TYPE_CHECKING:
    from ml.domain import DomainReference

__all__ = [
    "AnalysisContext",
    "AnalysisOptions",
    "Upload",
    "classify_image",
    "explain_image",
    "method_for",
    "run_analysis",
    "segment_image",
    "split_keys",
]

R = TypeVar("R", bound=ResultBase)
OptionsT = TypeVar("OptionsT", JobOptions, StudyOptions)  # a job's or a study's request


@dataclass
class AnalysisContext:
    """What a use case needs: a session, settings, the artifact store and the warm models."""

    session: AsyncSession
    settings: Settings
    store: ArtifactStore
    guards: Guards
    registry: ModelRegistry | None
    runner: InferenceRunner | None
    domain: DomainReference | None = None

    @classmethod
    def from_runtime(cls, runtime: Runtime, session: AsyncSession) -> AnalysisContext:
        return cls(
            session=session,
            settings=runtime.settings,
            store=runtime.store,
            guards=runtime.guards,
            registry=runtime.registry,
            runner=runtime.runner,
            domain=runtime.domain,
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
    method: str | None = None  # None: each model's measured best method
    faithfulness: bool = True
    frame: int | None = None
    allow_out_of_domain: bool = False


@dataclass
class _Work:
    """What a use case computed: the result's own fields, its files and its history rows."""

    fields: dict[str, Any]
    used: list[ModelEntry]
    rows: list[ModelResult]
    files: dict[str, bytes] = field(default_factory=dict)
    headline: dict[str, Any] = field(default_factory=dict)


Step = Callable[[Decoded, uuid.UUID, Timer], Awaitable[_Work]]


def method_for(entry: ModelEntry, method: str | None) -> str:
    """The method asked for, or the model's measured best one (Grad-CAM when unmeasured)."""
    return str(method) if method else entry.manifest.default_method


def with_resolved_models(runtime: Runtime, request: OptionsT) -> OptionsT:
    """A job or study request with the registry's defaults made explicit in ``models`` and
    ``segmentation_model``, refused now (unknown model, impossible explanation) rather than
    when the work runs."""
    registry = runtime.registry
    if registry is None:
        raise NotReady("The models are still loading; retry in a moment.")
    classifiers = registry.resolve(
        split_keys(request.models),
        "classification",
        limit=runtime.settings.max_models_per_request,
    )
    if request.explain:
        for entry in classifiers:
            check_explain(entry, "binary", method_for(entry, request.method), None)
    seg = (
        registry.resolve([request.segmentation_model], "segmentation")[0]
        if request.segmentation_model
        else registry.default_for("segmentation")
    )
    update = {
        "models": [e.key for e in classifiers],
        "segmentation_model": seg.key if seg is not None else None,
    }
    return request.model_copy(update=update)


def split_keys(keys: list[str] | None) -> list[str] | None:
    """Model keys from repeated form fields, also accepting comma-separated values."""
    if not keys:
        return None
    out = [k.strip() for item in keys for k in str(item).split(",") if k.strip()]
    return out or None


async def _run(
    ctx: AnalysisContext,
    principal: Principal,
    upload: Upload,
    result_type: type[R],
    step: Step,
    *,
    kind: str,
    frame: int | None,
    analysis_id: uuid.UUID | None,
    job_id: str | None,
    allow_out_of_domain: bool = False,
) -> R:
    """The skeleton every use case shares: decode, do ``step``, build the result, store it.

    An interactive request counts against the caller's analyses in flight; a job item does
    not (jobs have their own limit and their items must not fail for being many).
    """
    once = (result_type, step, kind, frame, analysis_id, job_id, allow_out_of_domain)
    if job_id is not None:
        return await _run_once(ctx, principal, upload, *once)

    def refuse() -> Exception:
        return TooManyRequests(
            f"You have {ctx.settings.max_concurrent_analyses} analyses running; wait for one "
            "to finish.",
            code="too_many_analyses",
            retry_after=2,
        )

    with ctx.guards.analyses.hold(principal.user_id, refuse):
        return await _run_once(ctx, principal, upload, *once)


async def _run_once(
    ctx: AnalysisContext,
    principal: Principal,
    upload: Upload,
    result_type: type[R],
    step: Step,
    kind: str,
    frame: int | None,
    analysis_id: uuid.UUID | None,
    job_id: str | None,
    allow_out_of_domain: bool,
) -> R:
    timer = Timer()
    decoded = await decode_upload(ctx.settings, ctx.guards.decoding, upload, frame, ctx.domain)
    timer.mark("decode")
    # Classifier outputs on images unlike the training slices are not shown as results unless
    # the caller asks for them anyway.
    assert decoded.domain is not None
    decoded.withheld = not decoded.domain["in_domain"] and not allow_out_of_domain
    aid, created = analysis_id or uuid.uuid4(), datetime.now(UTC)
    work = await step(decoded, aid, timer)
    result = result_type(
        id=aid,
        created_at=created,
        image=decoded.image_info(upload),
        image_url=artifact_url(aid, "input.png"),
        timings_ms=timer.total(),
        domain=DomainInfo(**decoded.domain) if decoded.domain else None,
        withheld=decoded.withheld,
        **work.fields,
    )
    await store_result(
        ctx.session,
        ctx.store,
        ctx.settings,
        principal,
        result,
        kind=kind,
        decoded=decoded,
        files=work.files,
        used=work.used,
        rows=work.rows,
        headline_values=work.headline,
        job_id=job_id,
    )
    return result


async def _segmented(
    runner: InferenceRunner, entry: ModelEntry, decoded: Decoded, aid: uuid.UUID
) -> tuple[Segmentation, SegmentationOutput, dict[str, bytes]]:
    seg = await segment(runner, entry, decoded)
    out, files = await asyncio.to_thread(segmentation_files, seg, decoded, aid)
    return seg, out, files


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
    entry = registry.resolve([model] if model else None, "segmentation")[0]

    async def step(decoded: Decoded, aid: uuid.UUID, timer: Timer) -> _Work:
        _, out, files = await _segmented(runner, entry, decoded, aid)
        timer.mark("segment")
        return _Work({"segmentation": out}, [entry], model_rows(out, [], []), files)

    return await _run(
        ctx,
        principal,
        upload,
        SegmentResult,
        step,
        kind="segment",
        frame=frame,
        analysis_id=analysis_id,
        job_id=job_id,
    )


async def classify_image(
    ctx: AnalysisContext,
    principal: Principal,
    upload: Upload,
    *,
    models: list[str] | None = None,
    frame: int | None = None,
    allow_out_of_domain: bool = False,
    analysis_id: uuid.UUID | None = None,
    job_id: str | None = None,
) -> ClassifyResult:
    """AS status and stage from one or more classifiers, side by side."""
    registry, runner = ctx.models()
    entries = registry.resolve(
        split_keys(models), "classification", limit=ctx.settings.max_models_per_request
    )

    async def step(decoded: Decoded, aid: uuid.UUID, timer: Timer) -> _Work:
        found = [] if decoded.withheld else await classify_all(runner, entries, decoded)
        timer.mark("classify")
        rows = model_rows(None, found, [])
        return _Work({"classifications": found}, entries, rows, headline=headline(found))

    return await _run(
        ctx,
        principal,
        upload,
        ClassifyResult,
        step,
        kind="classify",
        frame=frame,
        analysis_id=analysis_id,
        job_id=job_id,
        allow_out_of_domain=allow_out_of_domain,
    )


async def explain_image(
    ctx: AnalysisContext,
    principal: Principal,
    upload: Upload,
    *,
    model: str | None = None,
    head: str = "binary",
    method: str | None = None,
    focus: str = "segmentation",
    class_index: int | None = None,
    faithfulness: bool = True,
    frame: int | None = None,
    allow_out_of_domain: bool = False,
    analysis_id: uuid.UUID | None = None,
    job_id: str | None = None,
) -> ExplainResult:
    """A heatmap for one classifier head, focused, with overlays and a faithfulness score.

    Without a ``method``, the model's measured best one (its manifest's default) is used.
    """
    registry, runner = ctx.models()
    entry = registry.resolve([model] if model else None, "classification")[0]
    method = method_for(entry, method)
    check_explain(entry, head, method, class_index)
    seg_entry = registry.default_for("segmentation") if focus == "segmentation" else None

    async def step(decoded: Decoded, aid: uuid.UUID, timer: Timer) -> _Work:
        used = [entry] + ([seg_entry] if seg_entry is not None else [])
        if decoded.withheld:
            return _Work({"explanation": None}, used, model_rows(None, [], used))
        seg = await segment(runner, seg_entry, decoded) if seg_entry is not None else None
        timer.mark("segment")
        ex = await explain(
            runner,
            ctx.settings,
            entry,
            decoded,
            head=head,
            method=method,
            class_index=class_index,
            faithfulness=faithfulness,
        )
        found = await explain_rule_features(runner, entry, decoded)
        out, files = await asyncio.to_thread(
            explanation_files,
            ex,
            decoded,
            aid,
            focus=focus,
            seg=seg,
            per_model=False,
            features=found,
        )
        timer.mark("explain")
        return _Work({"explanation": out}, used, model_rows(None, [], used), files)

    return await _run(
        ctx,
        principal,
        upload,
        ExplainResult,
        step,
        kind="explain",
        frame=frame,
        analysis_id=analysis_id,
        job_id=job_id,
        allow_out_of_domain=allow_out_of_domain,
    )


async def _explained_and_drawn(
    ctx: AnalysisContext,
    entry: ModelEntry,
    decoded: Decoded,
    aid: uuid.UUID,
    opts: AnalysisOptions,
    segmented: Awaitable[tuple[Segmentation | None, Any, Any]],
) -> tuple[Explanation, ExplanationOutput, dict[str, bytes]]:
    """One classifier's explanation of its AS-status head, focused on the segmentation's
    lumbosacral ROI and drawn, with its faithfulness score when asked for.

    The heatmap needs nothing from the segmentation, so it is made beside it. Its files are
    drawn (once the segmentation is there) while its perturbed images run on the model's
    thread: the score changes only the response part, not the pictures.
    """
    _, runner = ctx.models()
    ex = await explain(
        runner,
        ctx.settings,
        entry,
        decoded,
        head="binary",
        method=method_for(entry, opts.method),
        class_index=None,
        faithfulness=False,
    )
    scoring = (
        asyncio.ensure_future(score_explanation(runner, ctx.settings, ex, decoded))
        if opts.faithfulness
        else None
    )
    try:
        seg, _, _ = await segmented
        found = await explain_rule_features(runner, entry, decoded)
        out, drawn = await asyncio.to_thread(
            explanation_files,
            ex,
            decoded,
            aid,
            focus="segmentation",
            seg=seg,
            per_model=True,
            features=found,
        )
        if scoring is not None:
            ex.faithfulness = await scoring
            out = out.model_copy(update={"faithfulness": mappers.faithfulness(ex.faithfulness)})
    finally:
        if scoring is not None and not scoring.done():
            scoring.cancel()
    return ex, out, drawn


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
            check_explain(entry, "binary", method_for(entry, opts.method), None)

    async def step(decoded: Decoded, aid: uuid.UUID, timer: Timer) -> _Work:
        async def segmented() -> tuple[Segmentation | None, SegmentationOutput | None, dict]:
            if seg_entry is None:
                return None, None, {}
            return await _segmented(runner, seg_entry, decoded, aid)

        seg_task = asyncio.ensure_future(segmented())

        async def classified() -> tuple[list[ClassificationOutput], list[ExplanationOutput]]:
            if decoded.withheld:
                return [], []
            if not opts.explain:
                return await classify_all(runner, classifiers, decoded), []
            done = await asyncio.gather(
                *(
                    _explained_and_drawn(ctx, entry, decoded, aid, opts, seg_task)
                    for entry in classifiers
                )
            )
            for _, _, drawn in done:
                drawn_files.update(drawn)
            # A Grad-CAM pass runs the whole classifier: it classifies too (no second run).
            cams = [ex.cam for ex, _, _ in done]
            found = await classify_all(runner, classifiers, decoded, cams)
            return found, [out for _, out, _ in done]

        # The segmentation and the classifiers (with their heatmaps, drawings and scores) run
        # together; each heatmap waits for the segmentation only to be focused and drawn.
        drawn_files: dict[str, bytes] = {}
        try:
            (seg, seg_out, files), (found, explanations) = await asyncio.gather(
                seg_task, classified()
            )
        finally:
            seg_task.cancel()  # a no-op once it is done; else the request failed elsewhere
        files = {**files, **drawn_files}
        timer.mark("segment_classify_explain")
        fields = {"segmentation": seg_out, "classifications": found, "explanations": explanations}
        used = ([seg_entry] if seg_entry is not None else []) + classifiers
        rows = model_rows(seg_out, found, [])
        return _Work(fields, used, rows, files, headline(found))

    return await _run(
        ctx,
        principal,
        upload,
        AnalysisResult,
        step,
        kind="analysis",
        frame=opts.frame,
        analysis_id=analysis_id,
        job_id=job_id,
        allow_out_of_domain=opts.allow_out_of_domain,
    )
