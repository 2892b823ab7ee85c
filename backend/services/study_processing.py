"""Worker-side analysis of one whole series (a study), called for the one item of a study job.

1. **Load** the staged series (``study.json``): DICOM headers again (the same files give the same
   order) or the NIfTI volume.
2. **Decode** every slice and scale the series' intensities together (0.5-99.8 percentile of the
   whole series to 8 bits, as the training slices were made), then each slice to 256x256.
3. **Check the domain** of every slice (:mod:`ml.domain`).
4. **Segment** every slice (micro-batched with other requests) into one 3D mask on the input's
   own grid (``mask.nii.gz``, with the input's affine).
5. **Choose the key slices** (:func:`ml.study.key_slices`: segmented area at least half the
   largest, at most ``study_key_slices`` nearest the area-weighted centre).
6. **Classify** every readable slice with each chosen model (the chart along the series) and
   **aggregate** each model over the in-domain key slices (:func:`ml.study.aggregate`).
7. **Explain** each key slice with each model (its default method, the best measured one, or
   the one asked for; focused on the segmented region); the central key slice also gets the
   deletion/insertion faithfulness score.
8. **Store** files first, then the analysis row (kind ``study``) and the study's final state in
   one transaction.

Progress (phase and slices done) is written to the study row as it goes; a cancelled study
stops at the next progress step.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.core.errors import AppError, NotReady
from backend.inference import mappers
from backend.interop.sources import SOURCES_FILE
from backend.models.study import STUDY_CANCELLED, STUDY_FAILED
from backend.repositories import jobs as jobs_repo
from backend.repositories import studies as studies_repo
from backend.runtime import Runtime
from backend.schemas.results import StudyResult, StudySegmentation
from backend.schemas.studies import StudyOptions
from backend.services.auth import Principal
from backend.services.study_phases import (
    Slices,
    StudyCancelled,
    StudyWork,
    classify_slices,
    decode_series,
    explain_key_slices,
    load_series,
    segment_slices,
)
from backend.services.study_result import (
    KEY_RULE,
    aggregates,
    mask_volume,
    render_slices,
    slices_out,
    store_study,
    study_domain,
)

__all__ = ["StudyCancelled", "analyse_study", "mark_study"]

log = logging.getLogger(__name__)


@dataclass
class RecordedProgress:
    """Progress written to the study row; raises StudyCancelled once the job is cancelled."""

    runtime: Runtime
    study_id: uuid.UUID
    job_id: uuid.UUID
    total: int
    last: float = 0.0

    async def __call__(self, phase: str, done: int, *, force: bool = False) -> None:
        """Record progress at most every half second; raise StudyCancelled if cancelled."""
        now = time.monotonic()
        if not force and now - self.last < 0.5:
            return
        self.last = now
        async with self.runtime.sessionmaker() as session:
            job = await jobs_repo.get_job(session, self.job_id)
            if job is None or job.cancelled_at is not None:
                raise StudyCancelled()
            await studies_repo.set_progress(
                session, self.study_id, phase=phase, done=done, total=self.total
            )
            await session.commit()


async def _start(runtime: Runtime, study_id: uuid.UUID) -> Any:
    """The study row (its creation time, input summary, slice count), marked running."""
    async with runtime.sessionmaker() as session:
        study = await studies_repo.get_study(session, study_id)
        if study is None:
            raise StudyCancelled()  # deleted before it started
        await studies_repo.set_progress(
            session,
            study_id,
            phase="decode",
            done=0,
            total=study.slices_total,
            started_at=await jobs_repo.database_now(session),
        )
        await session.commit()
        return study


async def _decode(runtime: Runtime, folder: Path) -> Slices:
    from ml.io import ImageError

    def load_and_decode() -> Slices:
        series, files = load_series(folder, runtime.settings)
        return decode_series(series, files, min_slices=3)

    try:
        return await runtime.guards.decoding.run(load_and_decode)
    except ImageError as exc:
        status = 413 if exc.code == "too_large" else 422
        raise AppError(exc.message, code=exc.code, status_code=status) from exc


async def _domains(runtime: Runtime, slices: Slices) -> list[dict[str, Any] | None]:
    """Each readable slice's applicability-domain block (header and content)."""
    from ml.domain import assess

    ref, modality = runtime.domain, slices.series.modality or None

    def judge() -> list[dict[str, Any] | None]:
        return [
            None if d is None else assess(ref.score(d) if ref else None, modality=modality)
            for d in slices.display
        ]

    return await asyncio.to_thread(judge)


async def analyse_study(
    runtime: Runtime,
    principal: Principal,
    study_id: uuid.UUID,
    job_id: uuid.UUID,
    folder: Path,
    options: StudyOptions,
) -> StudyResult:
    """Analyse the staged series in ``folder`` and store the result (see module docstring).

    Raises:
        AppError: the series cannot be analysed (its code says why).
        StudyCancelled: the study was cancelled (or deleted) while it ran.
    """
    from ml.study import key_slices

    registry, runner = runtime.registry, runtime.runner
    if registry is None or runner is None:
        raise NotReady("The models are still loading; retry in a moment.")
    settings = runtime.settings
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def mark(name: str) -> None:
        timings[name] = round((time.perf_counter() - t0) * 1000.0, 1)

    study = await _start(runtime, study_id)
    progress = RecordedProgress(runtime, study_id, job_id, study.slices_total)
    slices = await _decode(runtime, folder)
    mark("decode")
    await progress("domain", 0, force=True)
    doms = await _domains(runtime, slices)
    mark("domain")

    seg_key = options.segmentation_model
    seg_entry = (
        registry.resolve([seg_key], "segmentation")[0]
        if seg_key
        else registry.default_for("segmentation")
    )
    classifiers = registry.resolve(options.models or None, "classification")
    work = StudyWork(slices=slices, domains=doms, seg_entry=seg_entry)
    await segment_slices(runtime, work, progress)
    mark("segment")
    work.key = key_slices(work.areas, limit=settings.study_key_slices)
    domain, basis = study_domain(work, options.allow_out_of_domain)
    withheld = not domain.in_domain and not options.allow_out_of_domain
    if not withheld and work.key:
        await classify_slices(runtime, work, classifiers, progress)
        mark("classify")
        if options.explain:
            await explain_key_slices(runtime, work, classifiers, options, study_id, progress)
            mark("explain")
    await progress("store", len(slices.display), force=True)

    def render() -> tuple[dict[str, bytes], int, float]:
        nii, voxels, volume_ml = mask_volume(work)
        files = {**render_slices(work), "mask.nii.gz": nii, **work.files}
        if slices.sources is not None:
            files[SOURCES_FILE] = slices.sources
        return files, voxels, volume_ml

    files, voxels, volume_ml = await asyncio.to_thread(render)
    mark("render")
    result = StudyResult(
        id=study_id,
        created_at=study.created_at,
        input=dict(study.input_summary),
        segmentation=StudySegmentation(
            model=mappers.model_ref(seg_entry),
            mask_url=f"/studies/{study_id}/mask.nii.gz",
            voxels=voxels,
            volume_ml=round(volume_ml, 3),
            key_slices=work.key,
            key_slice_rule=KEY_RULE.format(limit=settings.study_key_slices),
            label_provenance=mappers.provenance(seg_entry),
        )
        if seg_entry is not None
        else None,
        models=[] if withheld else aggregates(work, classifiers, basis),
        slices=slices_out(work, study_id, withheld),
        domain=domain,
        withheld=withheld,
        timings_ms=timings,
    )
    used = ([seg_entry] if seg_entry is not None else []) + classifiers
    await store_study(runtime, principal, result, files, used, job_id)
    return result


async def mark_study(
    runtime: Runtime, study_id: uuid.UUID, status: str, code: str | None, message: str | None
) -> None:
    """Record a study's end without a result (failed or cancelled)."""
    assert status in (STUDY_FAILED, STUDY_CANCELLED)
    async with runtime.sessionmaker() as session:
        now = await jobs_repo.database_now(session)
        await studies_repo.finish(
            session,
            study_id,
            status,
            now,
            error_code=code,
            error_message=(message or "")[:500] or None,
        )
        await session.commit()
