"""The phases of a study analysis: load and decode the series, segment every slice, classify
every slice, explain the key slices (see :mod:`backend.services.study_processing`).

Each phase sends its requests to the inference runner ``IN_FLIGHT`` at a time, so the runner's
micro-batcher fills its batches, and reports progress after each slice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from backend.core.errors import AppError
from backend.inference import mappers, overlays
from backend.inference.registry import ModelEntry
from backend.runtime import Runtime
from backend.schemas.results import SliceClassification, SliceHeatmap
from backend.schemas.studies import StudyOptions
from backend.services.analysis import method_for
from backend.services.pipeline import Decoded, Explanation, Segmentation, explain
from backend.services.rendering import artifact_url, explanation_files
from backend.services.study_intake import read_manifest

T = TypeVar("T")

# Requests in flight at once per phase: enough to fill the micro-batcher's batches.
IN_FLIGHT = 32


class StudyCancelled(Exception):
    """The study (its job) was cancelled while it ran."""


class Progress(Protocol):
    async def __call__(self, phase: str, done: int, *, force: bool = False) -> None: ...


@dataclass
class Slices:
    """The decoded series: one display image per readable slice and what went wrong."""

    series: Any  # ml.series.Series
    display: list[np.ndarray | None]
    errors: dict[int, str] = field(default_factory=dict)
    # The reduced headers of the source instances (interop.sources), for DICOM inputs.
    sources: bytes | None = None

    def readable(self) -> list[int]:
        return [i for i, d in enumerate(self.display) if d is not None]


# ----------------------------------------------------------------------------- load and decode


def load_series(folder: Path, settings: Any) -> tuple[Any, list[tuple[str, Path]]]:
    """The staged series (study.json beside its files), under the same limits as at intake."""
    from ml.series import load_nifti, scan_dicom

    fmt, files = read_manifest(folder)
    if fmt == "nifti":
        series = load_nifti(
            files[0][1].read_bytes(),
            max_pixels=settings.max_pixels,
            max_decoded_bytes=settings.max_decoded_bytes,
        )
    else:
        series = scan_dicom(
            files,
            max_pixels=settings.max_pixels,
            max_frames=settings.max_frames,
            max_decoded_bytes=settings.max_decoded_bytes,
        )
    return series, files


def decode_series(series: Any, files: Sequence[tuple[str, Path]], min_slices: int) -> Slices:
    """Every slice at 256x256, the series scaled to 8 bits as one (like the training data)."""
    from ml.preprocessing import IMAGE_SIZE
    from ml.study import display_slices
    from ml.study_run import raw_slices

    raw, errors = raw_slices(series, list(files))
    readable = sum(r is not None for r in raw)
    if readable < min_slices:
        raise AppError(
            f"Only {readable} slices of the series could be read; at least {min_slices} are "
            "needed.",
            code="too_few_slices",
            status_code=422,
        )
    sources = None
    if series.volume is None:
        from backend.interop.sources import pack_sources

        used = list(dict.fromkeys(ref.source for ref in series.slices))
        sources = pack_sources([files[i] for i in used])
    return Slices(series, display_slices(raw, IMAGE_SIZE), errors, sources)


async def bounded(items: Sequence[Any], fn: Callable[[Any], Awaitable[T]]) -> list[T]:
    """``fn`` over ``items``, IN_FLIGHT at a time (the runner batches concurrent calls)."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(item: Any) -> T:
        async with gate:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


def decoded_slice(display: np.ndarray, fmt: str, index: int) -> Decoded:
    return Decoded(
        pixels=display,
        format=fmt,
        meta={"slice": index},
        sha256="",
        display=display,
    )


def slice_name(kind: str, index: int) -> str:
    return f"{kind}-{index:04d}.png"


@dataclass
class StudyWork:
    """What the phases produced, kept together until the result is built."""

    slices: Slices
    domains: list[dict[str, Any] | None]
    seg_entry: ModelEntry | None
    probs: list[np.ndarray | None] = field(default_factory=list)
    masks: list[np.ndarray | None] = field(default_factory=list)
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    key: list[int] = field(default_factory=list)
    per_slice: dict[int, list[SliceClassification]] = field(default_factory=dict)
    probs_by_model: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = field(
        default_factory=dict
    )
    heatmaps: dict[int, list[SliceHeatmap]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- phases


async def segment_slices(runtime: Runtime, work: StudyWork, progress: Progress) -> None:
    entry = work.seg_entry
    readable = work.slices.readable()
    n = len(work.slices.display)
    work.probs = [None] * n
    work.masks = [None] * n
    if entry is None or runtime.runner is None:
        work.areas = np.zeros(n)
        return
    runner = runtime.runner
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        image = decoded_slice(work.slices.display[i], "study", i).input_for(entry.input_size)  # type: ignore[arg-type]
        prob = mappers.to_display(await runner.segment(entry, image))
        work.probs[i] = prob
        work.masks[i] = (prob >= entry.mask_threshold).astype(np.uint8)
        done += 1
        await progress("segment", done)

    await bounded(readable, one)
    work.areas = np.asarray([float(m.mean()) if m is not None else 0.0 for m in work.masks])


async def classify_slices(
    runtime: Runtime, work: StudyWork, classifiers: list[ModelEntry], progress: Progress
) -> None:
    runner = runtime.runner
    assert runner is not None
    readable = work.slices.readable()
    pairs = [(i, e) for i in readable for e in classifiers]
    done = 0

    async def one(pair: tuple[int, ModelEntry]) -> None:
        nonlocal done
        i, entry = pair
        decoded = decoded_slice(work.slices.display[i], "study", i)  # type: ignore[arg-type]
        out = await runner.classify(entry, decoded.input_for(entry.input_size))
        c = mappers.classification(entry, out.p_status, out.p_stage)
        p_pos = c.as_probabilities.get("positive", float(np.asarray(out.p_status).ravel()[-1]))
        work.per_slice.setdefault(i, []).append(
            SliceClassification(
                model=entry.key,
                p_positive=p_pos,
                as_status=c.as_status,
                stage=c.stage,
                stage_probability=c.stage_probability,
            )
        )
        work.probs_by_model.setdefault(entry.key, {})[i] = (
            np.asarray(out.p_status, dtype=np.float64).ravel(),
            np.asarray(out.p_stage, dtype=np.float64).ravel(),
        )
        done += 1
        await progress("classify", done // max(len(classifiers), 1))

    await bounded(pairs, one)
    order = {e.key: k for k, e in enumerate(classifiers)}
    for outs in work.per_slice.values():
        outs.sort(key=lambda c: order[c.model])


def segmentation_of(work: StudyWork, i: int) -> Segmentation | None:
    from ml.predict import roi_from_mask

    if work.seg_entry is None or work.masks[i] is None or work.probs[i] is None:
        return None
    mask = work.masks[i]
    assert mask is not None
    bbox, roi_mask = roi_from_mask(mask)
    prob = work.probs[i]
    assert prob is not None
    return Segmentation(work.seg_entry, prob, mask, bbox, roi_mask if bbox is not None else None)


async def explain_key_slices(
    runtime: Runtime,
    work: StudyWork,
    classifiers: list[ModelEntry],
    opts: StudyOptions,
    study_id: uuid.UUID,
    progress: Progress,
) -> None:
    runner = runtime.runner
    assert runner is not None
    central = work.key[len(work.key) // 2] if work.key else None
    done = 0

    async def one(pair: tuple[int, ModelEntry]) -> None:
        nonlocal done
        i, entry = pair
        decoded = decoded_slice(work.slices.display[i], "study", i)  # type: ignore[arg-type]
        ex: Explanation = await explain(
            runner,
            runtime.settings,
            entry,
            decoded,
            head="binary",
            method=method_for(entry, opts.method),
            class_index=None,
            faithfulness=i == central,
        )
        seg = segmentation_of(work, i)

        def draw() -> tuple[Any, dict[str, bytes]]:
            out, files = explanation_files(
                ex,
                decoded,
                study_id,
                focus="segmentation" if seg is not None else "lumbosacral",
                seg=seg,
                per_model=True,
                prefix=f"s{i:04d}-",
            )
            heat = np.clip(mappers.to_display(ex.cam.heatmap), 0.0, 1.0)
            layer = f"s{i:04d}-layer-{mappers.slug(entry.key)}.png"
            files[layer] = overlays.heatmap_layer(heat)
            return (out, layer), files

        (out, layer), files = await asyncio.to_thread(draw)
        work.files.update(files)
        work.heatmaps.setdefault(i, []).append(
            SliceHeatmap(
                model=entry.key,
                method=ex.method,  # type: ignore[arg-type]
                method_note=ex.method_note,
                class_label=out.class_label,
                probability=out.probability,
                inside_fraction=out.inside_fraction,
                faithfulness_score=out.faithfulness.score if out.faithfulness else None,
                heatmap_url=artifact_url(study_id, layer),
                overlay_url=out.focused_overlay_url or out.overlay_url,
            )
        )
        done += 1
        await progress("explain", done)

    await bounded([(i, e) for i in work.key for e in classifiers], one)
