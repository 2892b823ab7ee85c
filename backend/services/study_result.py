"""A study's result from its phases: the domain of the study, each model's aggregate, the
pictures and the 3D mask, and storing all of it (files first, then rows) - see
:mod:`backend.services.study_processing`.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np

from backend.inference import mappers, overlays
from backend.inference.registry import ModelEntry
from backend.models import Analysis, ModelResult
from backend.models.study import STUDY_DONE
from backend.repositories import analyses as analyses_repo
from backend.repositories import audit
from backend.repositories import jobs as jobs_repo
from backend.repositories import studies as studies_repo
from backend.runtime import Runtime
from backend.schemas.results import StudyDomain, StudyModelResult, StudyResult, StudySlice
from backend.services.atomic import files_then_rows
from backend.services.auth import Principal
from backend.services.rendering import artifact_url
from backend.services.result_store import check_quota, model_rows
from backend.services.study_phases import StudyCancelled, StudyWork, slice_name

KEY_RULE = (
    "slices whose segmented area is at least half the largest; of those at most {limit} "
    "nearest the area-weighted centre of the series (the midline)"
)


def study_domain(work: StudyWork, allow: bool) -> tuple[StudyDomain, list[int]]:
    """The study's domain from its key slices, and the key slices the answer may rest on."""
    checked = [d for d in work.domains if d is not None]
    out_slices = sum(1 for d in checked if not d["in_domain"])
    reasons: list[str] = []
    if not work.key:
        reasons.append("the segmenter found no lumbosacral structures in any slice")
        return (
            StudyDomain(
                in_domain=False,
                score=None,
                reasons=reasons,
                slices_out_of_domain=out_slices,
                slices_checked=len(checked),
            ),
            [],
        )
    key_domains = [work.domains[i] for i in work.key]
    inside = [i for i, d in zip(work.key, key_domains, strict=True) if d and d["in_domain"]]
    scores = [d["score"] for d in key_domains if d and d.get("score") is not None]
    in_domain = len(inside) * 2 >= len(work.key)
    if not in_domain:
        reasons.append(
            f"{len(work.key) - len(inside)} of the {len(work.key)} key slices are unlike the "
            "training slices"
        )
    for d in key_domains:
        for r in (d or {}).get("reasons", []):
            if r not in reasons and "score" not in r:
                reasons.append(r)
    domain = StudyDomain(
        in_domain=in_domain,
        score=round(float(np.median(scores)), 4) if scores else None,
        reasons=reasons,
        slices_out_of_domain=out_slices,
        slices_checked=len(checked),
    )
    return domain, (work.key if allow else inside)


def aggregates(
    work: StudyWork, classifiers: list[ModelEntry], basis: list[int]
) -> list[StudyModelResult]:
    from ml.study import aggregate

    out = []
    for entry in classifiers:
        probs = work.probs_by_model.get(entry.key, {})
        rows = [probs[i] for i in basis if i in probs]
        if not rows:
            continue
        agg = aggregate(
            np.stack([r[0] for r in rows]),
            np.stack([r[1] for r in rows]),
            entry.status_names,
            entry.stage_names,
        )
        out.append(
            StudyModelResult(
                model=mappers.model_ref(entry), label_provenance=mappers.provenance(entry), **agg
            )
        )
    return out


def render_slices(work: StudyWork) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for i, display in enumerate(work.slices.display):
        if display is None:
            continue
        files[slice_name("slice", i)] = mappers.png(display)
        mask = work.masks[i] if work.masks else None
        if mask is not None and mask.any():
            files[slice_name("mask", i)] = overlays.mask_layer(mask)
    return files


def mask_volume(work: StudyWork) -> tuple[bytes, int, float]:
    """The 3D mask on the input grid as .nii.gz, its voxel count and volume (ml)."""
    from ml.series import mask_to_nifti
    from ml.study import to_grid

    series = work.slices.series
    vol = np.zeros((len(series.slices), series.rows, series.cols), dtype=np.uint8)
    threshold = work.seg_entry.mask_threshold if work.seg_entry is not None else 0.5
    for i, prob in enumerate(work.probs):
        if prob is not None:
            vol[i] = to_grid(prob, series.rows, series.cols) >= threshold
    voxels = int(vol.sum())
    voxel_ml = series.pixel_spacing[0] * series.pixel_spacing[1] * abs(series.slice_spacing) / 1e3
    return mask_to_nifti(series, vol), voxels, voxels * voxel_ml


def slices_out(work: StudyWork, study_id: uuid.UUID, withheld: bool) -> list[StudySlice]:
    series = work.slices.series
    origin = series.slices[0].along if series.slices else 0.0
    out = []
    for i, ref in enumerate(series.slices):
        readable = work.slices.display[i] is not None
        mask = work.masks[i] if work.masks else None
        out.append(
            StudySlice(
                index=i,
                position_mm=round(
                    float(ref.along - origin)
                    * (1.0 if series.volume is None else series.slice_spacing),
                    3,
                ),
                sop_instance_uid=ref.sop_uid or None,
                frame=ref.frame,
                image_url=artifact_url(study_id, slice_name("slice", i)) if readable else None,
                mask_url=artifact_url(study_id, slice_name("mask", i))
                if mask is not None and mask.any()
                else None,
                mask_fraction=round(float(work.areas[i]), 5) if len(work.areas) else 0.0,
                key=i in work.key,
                domain=work.domains[i],  # type: ignore[arg-type]
                classifications=[] if withheld else work.per_slice.get(i, []),
                heatmaps=[] if withheld else work.heatmaps.get(i, []),
                error=work.slices.errors.get(i),
            )
        )
    return out


async def store_study(
    runtime: Runtime,
    principal: Principal,
    result: StudyResult,
    files: dict[str, bytes],
    used: list[ModelEntry],
    job_id: uuid.UUID,
) -> None:
    """Files first (one rename), then the analysis row, model rows, audit event and the
    study's final state in one transaction. A study cancelled meanwhile stores nothing."""
    store = runtime.store
    study_id = result.id
    stored_bytes = sum(len(b) for b in files.values())
    async with runtime.sessionmaker() as session:
        await check_quota(session, runtime.settings, principal, stored_bytes)
        if await asyncio.to_thread(store.exists, study_id) and (
            await analyses_repo.get_analysis(session, study_id) is None
        ):
            # Files without a row: left by an attempt that died between rename and commit.
            await asyncio.to_thread(store.delete, study_id)
        await asyncio.to_thread(store.discard_staged, study_id)
        staged = store.stage(study_id)
        async with files_then_rows(session, staged):

            def write() -> None:
                staged.add_all(files)
                staged.commit()

            await asyncio.to_thread(write)
            first = result.models[0] if result.models else None
            headline = (
                {
                    "as_status": first.as_status,
                    "as_confidence": first.as_probability,
                    "stage": first.stage,
                    "stage_confidence": first.stage_probability,
                }
                if first is not None
                else {}
            )
            central = result.segmentation.key_slices if result.segmentation else []
            image_index = central[len(central) // 2] if central else 0
            image_name = slice_name("slice", image_index)
            row = Analysis(
                id=study_id,
                user_id=principal.user_id,
                kind="study",
                created_at=result.created_at,
                image_path=image_name if image_name in files else None,
                image_format=str(result.input.get("format") or "dicom")[:16],
                input_sha256="",
                original_filename=None,
                stored_bytes=stored_bytes,
                models=[e.key for e in used],
                model_versions={e.key: e.version for e in used},
                label_provenance={e.key: e.label_provenance.model_dump(mode="json") for e in used},
                timings=result.timings_ms,
                result=result.model_dump(mode="json"),
                job_id=str(job_id),
                **headline,
            )
            await analyses_repo.add_analysis(session, row, study_model_rows(result, used))
            now = await jobs_repo.database_now(session)
            if not await studies_repo.finish(
                session,
                study_id,
                STUDY_DONE,
                now,
                in_domain=result.domain.in_domain,
                **headline,
            ):
                raise StudyCancelled()
            await audit.record(
                session,
                action="inference.study",
                actor=principal.actor,
                user_id=principal.user_id,
                target=str(study_id),
                detail={
                    "models": {e.key: e.version for e in used},
                    "slices": len(result.slices),
                    "format": result.input.get("format"),
                    "job_id": str(job_id),
                },
            )


def study_model_rows(result: StudyResult, used: list[ModelEntry]) -> list[Any]:

    rows = [
        ModelResult(
            model_key=m.model.key,
            model_version=m.model.version,
            task="classification",
            as_status=m.as_status,
            as_confidence=m.as_probability,
            stage=m.stage,
            stage_confidence=m.stage_probability,
        )
        for m in result.models
    ]
    seen = {r.model_key for r in rows}
    return rows + [r for r in model_rows(None, [], used) if r.model_key not in seen]
