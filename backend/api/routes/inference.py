"""Inference on one uploaded image: segment, classify, explain, or the whole pipeline."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form

from backend.api.deps import AnalysisDep, CurrentUser, UploadDep
from backend.schemas.common import error_responses
from backend.schemas.results import (
    AnalysisResult,
    CamMethod,
    ClassifyResult,
    ExplainResult,
    Focus,
    Head,
    SegmentResult,
)
from backend.services import analysis as analysis_service

router = APIRouter(tags=["inference"])

_ERRORS = error_responses(400, 401, 413, 415, 422, 503)
Frame = Annotated[
    int | None, Form(description="frame / slice of a multi-frame DICOM, volume or NIfTI")
]
Models = Annotated[
    list[str] | None,
    Form(description="classifier keys (repeat the field); default: the registry default"),
]
Method = Annotated[
    CamMethod | None,
    Form(
        description="heatmap method; default: each model's measured best method (GET /models: "
        "default_method). attention: rollout, hybrid v3 models only"
    ),
]
AllowOutOfDomain = Annotated[
    bool,
    Form(
        description="show classifier outputs even when the image is unlike the training "
        "slices (they are withheld by default)"
    ),
]


@router.post("/segment", response_model=SegmentResult, responses=_ERRORS)
async def segment(
    ctx: AnalysisDep,
    principal: CurrentUser,
    upload: UploadDep,
    model: Annotated[str | None, Form(description="segmentation model key")] = None,
    frame: Frame = None,
) -> SegmentResult:
    """Segment the lumbosacral structures: mask, probability summary and ROI box."""
    return await analysis_service.segment_image(ctx, principal, upload, model=model, frame=frame)


@router.post("/classify", response_model=ClassifyResult, responses=_ERRORS)
async def classify(
    ctx: AnalysisDep,
    principal: CurrentUser,
    upload: UploadDep,
    models: Models = None,
    frame: Frame = None,
    allow_out_of_domain: AllowOutOfDomain = False,
) -> ClassifyResult:
    """AS status and stage with probabilities from one or more models, side by side."""
    return await analysis_service.classify_image(
        ctx,
        principal,
        upload,
        models=models,
        frame=frame,
        allow_out_of_domain=allow_out_of_domain,
    )


@router.post("/explain", response_model=ExplainResult, responses=_ERRORS)
async def explain(
    ctx: AnalysisDep,
    principal: CurrentUser,
    upload: UploadDep,
    model: Annotated[str | None, Form(description="classifier key")] = None,
    head: Annotated[Head, Form()] = Head.binary,
    method: Method = None,
    focus: Annotated[Focus, Form()] = Focus.segmentation,
    class_index: Annotated[
        int | None, Form(description="class to explain; default: predicted")
    ] = None,
    faithfulness: Annotated[bool, Form(description="compute the deletion/insertion score")] = True,
    frame: Frame = None,
    allow_out_of_domain: AllowOutOfDomain = False,
) -> ExplainResult:
    """A heatmap explaining one classifier head, region-focused, with a faithfulness score."""
    return await analysis_service.explain_image(
        ctx,
        principal,
        upload,
        model=model,
        head=head,
        method=method,
        focus=focus,
        class_index=class_index,
        faithfulness=faithfulness,
        frame=frame,
        allow_out_of_domain=allow_out_of_domain,
    )


@router.post("/analyses", response_model=AnalysisResult, responses=_ERRORS)
async def analyze(
    ctx: AnalysisDep,
    principal: CurrentUser,
    upload: UploadDep,
    models: Models = None,
    segmentation_model: Annotated[str | None, Form()] = None,
    explain: Annotated[bool, Form(description="add a heatmap per classifier")] = True,
    method: Method = None,
    faithfulness: Annotated[bool, Form()] = True,
    frame: Frame = None,
    allow_out_of_domain: AllowOutOfDomain = False,
) -> AnalysisResult:
    """The full pipeline: segment, classify with each chosen model, explain with ROI focus."""
    options = analysis_service.AnalysisOptions(
        models=models,
        segmentation_model=segmentation_model,
        explain=explain,
        method=method,
        faithfulness=faithfulness,
        frame=frame,
        allow_out_of_domain=allow_out_of_domain,
    )
    return await analysis_service.run_analysis(ctx, principal, upload, options)
