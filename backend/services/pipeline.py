"""The steps every inference use case is built from: decode an upload, segment, classify, CAM.

Model calls go through the batched runner (never on the event loop); turning their outputs into
images lives in :mod:`backend.services.rendering`, storing them in
:mod:`backend.services.result_store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.core.config import Settings
from backend.core.errors import IMAGE_ERROR_STATUS, AppError, BadInput
from backend.core.pools import BoundedPool
from backend.inference import mappers
from backend.inference.registry import ModelEntry
from backend.inference.runner import (
    CamOutput,
    Classification,
    InferenceRunner,
    classification_of,
)
from backend.schemas.results import ClassificationOutput, ImageInfo
from ml.vocab import HEAD_OUTPUTS

if TYPE_CHECKING:
    from ml.domain import DomainReference
    from ml.levels import LevelMap

log = logging.getLogger(__name__)


@dataclass
class Upload:
    """An uploaded file's bytes and what the client said about it (never trusted for format)."""

    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass
class Decoded:
    """A decoded upload: raw pixels, their 256x256 display version, model inputs per size."""

    pixels: np.ndarray
    format: str
    meta: dict[str, Any]
    sha256: str
    display: np.ndarray
    _inputs: dict[int, np.ndarray] = field(default_factory=dict)
    # The applicability-domain block, and whether classifier outputs are withheld because of it.
    domain: dict[str, Any] | None = None
    withheld: bool = False
    # A DICOM input's reduced header (interop.sources), kept for the DICOM and FHIR exports.
    sources: bytes | None = None
    # ``display`` as the stored input.png, encoded beside the decode (off the event loop).
    display_png: bytes | None = None

    def input_for(self, size: int) -> np.ndarray:
        if size == self.display.shape[0]:
            return self.display
        if size not in self._inputs:
            from ml.preprocessing import preprocess

            self._inputs[size] = preprocess(self.pixels, size)
        return self._inputs[size]

    def image_info(self, upload: Upload) -> ImageInfo:
        h, w = self.pixels.shape[:2]
        meta = self.meta
        frame = meta.get("frame", meta.get("slice_index", meta.get("sagittal_index")))
        return ImageInfo(
            format=self.format,
            width=int(w),
            height=int(h),
            sha256=self.sha256,
            filename=(upload.filename or None) and str(upload.filename)[:255],
            frame=int(frame) if frame is not None else None,
        )


class Timer:
    """Milliseconds per named step, and the total."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.marks[name] = round((now - self.last) * 1000.0, 2)
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.marks, "total": round((time.perf_counter() - self.t0) * 1000.0, 2)}


# DICOM modalities a sagittal MR slice may arrive as: MR itself, or a secondary capture.
ACCEPTED_MODALITIES = ("MR", "OT", "")


def _check_modality(modality: Any) -> None:
    if modality is not None and str(modality) not in ACCEPTED_MODALITIES:
        raise BadInput(
            f"Only MR images can be analysed; this DICOM is {modality}.",
            code="unsupported_modality",
            status_code=422,
        )


def judge_domain(reference: DomainReference | None, decoded: Decoded) -> dict[str, Any]:
    """The applicability-domain block for a decoded slice (header and content)."""
    from ml.domain import assess

    score = reference.score(decoded.display) if reference is not None else None
    modality = decoded.meta.get("modality") if decoded.format == "dicom" else None
    return assess(score, modality=modality or None)


def _decode_sync(data: bytes, frame: int | None, settings: Settings) -> Decoded:
    from ml.io import ImageError, read_image, require_content
    from ml.preprocessing import IMAGE_SIZE, preprocess

    try:
        loaded = read_image(
            data,
            frame=frame,
            max_pixels=settings.max_pixels,
            max_frames=settings.max_frames,
            max_decoded_bytes=settings.max_decoded_bytes,
        )
        require_content(loaded.pixels)
        _check_modality(loaded.meta.get("modality"))
        display = preprocess(loaded.pixels, IMAGE_SIZE)
        if not np.isfinite(display).all():
            # Never let a NaN reach a model: its outputs would be stored as a result.
            raise ImageError("corrupt_image", "The image's values cannot be scaled for a model.")
    except ImageError as exc:
        raise BadInput(
            exc.message, code=exc.code, status_code=IMAGE_ERROR_STATUS.get(exc.code, 400)
        ) from exc
    except AppError:
        raise
    except (ValueError, TypeError, MemoryError) as exc:
        raise BadInput(
            f"The image could not be turned into a grayscale slice ({exc}).",
            code="unsupported_format",
            status_code=415,
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a decoder's failure on crafted input is still bad input
        log.exception("Decoding an upload failed unexpectedly; answered corrupt_image")
        raise BadInput(
            "The image could not be decoded: the file is malformed.", code="corrupt_image"
        ) from exc
    sources = None
    if loaded.format == "dicom":
        from backend.interop.sources import pack_sources

        # A header odd enough to fail here only loses the DICOM exports (409 no_dicom_source).
        with contextlib.suppress(Exception):
            sources = pack_sources([("input", data)])
    return Decoded(
        pixels=loaded.pixels,
        format=loaded.format,
        meta=dict(loaded.meta),
        sha256=hashlib.sha256(data).hexdigest(),
        display=display,
        sources=sources,
    )


def _decode_and_judge(
    data: bytes, frame: int | None, settings: Settings, reference: DomainReference | None
) -> Decoded:
    decoded = _decode_sync(data, frame, settings)
    decoded.domain = judge_domain(reference, decoded)
    decoded.display_png = mappers.png(decoded.display)
    return decoded


async def decode_upload(
    settings: Settings,
    pool: BoundedPool,
    upload: Upload,
    frame: int | None,
    reference: DomainReference | None = None,
) -> Decoded:
    """Decode on the decode pool (a few at a time, 503 when its queue is full); the slice is
    judged against the applicability domain (``decoded.domain``) and its input.png encoded
    there too, a few ms of NumPy and zlib that would otherwise hold the event loop. Bad input
    becomes a BadInput with the reader's code."""
    if len(upload.data) > settings.max_upload_bytes:
        raise AppError("The upload is larger than the limit.", code="too_large", status_code=413)
    if frame is not None and frame < 0:
        raise BadInput("The frame index must be 0 or more.", code="bad_frame")
    return await pool.run(_decode_and_judge, upload.data, frame, settings, reference)


@dataclass
class Segmentation:
    """One segmentation at display size: probabilities, mask, ROI box and ROI mask."""

    entry: ModelEntry
    prob: np.ndarray
    mask: np.ndarray  # uint8 0/1
    bbox: Any
    roi_mask: np.ndarray | None
    levels: LevelMap | None = None


async def segment(runner: InferenceRunner, entry: ModelEntry, decoded: Decoded) -> Segmentation:
    """Run the segmenter; threshold and find the lumbosacral ROI off the event loop."""
    prob = await runner.segment(entry, decoded.input_for(entry.input_size))

    def post() -> Segmentation:
        from ml.levels import name_levels
        from ml.predict import roi_from_mask

        prob_d = mappers.to_display(prob)
        mask = (prob_d >= entry.mask_threshold).astype(np.uint8)
        bbox, roi_mask = roi_from_mask(mask)
        roi = roi_mask if bbox is not None else None
        return Segmentation(entry, prob_d, mask, bbox, roi, name_levels(mask))

    return await asyncio.to_thread(post)


async def classify_all(
    runner: InferenceRunner,
    entries: list[ModelEntry],
    decoded: Decoded,
    cams: Sequence[CamOutput | None] | None = None,
) -> list[ClassificationOutput]:
    """Every classifier on the same image, side by side (batched with other requests).

    ``cams``: a CAM of the same image per entry, when there is one: a Grad-CAM-family pass
    computed both heads already, so that classifier is not run again (same probabilities).
    """

    async def one(entry: ModelEntry, cam: CamOutput | None) -> Classification:
        found = classification_of(entry, cam) if cam is not None else None
        return found or await runner.classify(entry, decoded.input_for(entry.input_size))

    outs = await asyncio.gather(
        *(one(e, c) for e, c in zip(entries, cams or [None] * len(entries), strict=True))
    )
    return [
        mappers.classification(e, o.p_status, o.p_stage) for e, o in zip(entries, outs, strict=True)
    ]


# A heatmap whose largest value is at most this is empty; these are tried in turn instead (the
# last one, occlusion, perturbs the input and needs nothing from the model's layers).
EMPTY_MAP = 1e-6
FALLBACK = ("gradcam++", "eigencam", "occlusion")


def check_explain(entry: ModelEntry, head: str, method: str, class_index: int | None) -> None:
    """Refuse impossible explanation requests before any work is done."""
    if method == "attention" and not entry.attention_layers:
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


@dataclass
class Explanation:
    """A class activation map and, when asked for, its deletion/insertion scores."""

    entry: ModelEntry
    head: str
    method: str
    cam: CamOutput
    faithfulness: dict[str, Any] | None
    method_note: str = ""


async def explain(
    runner: InferenceRunner,
    settings: Settings,
    entry: ModelEntry,
    decoded: Decoded,
    *,
    head: str,
    method: str,
    class_index: int | None,
    faithfulness: bool,
) -> Explanation:
    """A heatmap of one classifier head, with its faithfulness score when asked for.

    An all-zero map is never shown as an explanation: the next method of :data:`FALLBACK` is
    tried, and the explanation says which method it shows and why (``method_note``).
    """
    image = decoded.input_for(entry.input_size)
    output = HEAD_OUTPUTS[head]
    cam = await runner.cam(entry, image, head=output, method=method, class_index=class_index)
    used, note = method, ""
    for fallback in FALLBACK:
        if float(np.max(cam.heatmap)) > EMPTY_MAP or fallback == used:
            continue
        note = (
            f"The {used} map of this image was empty (the model's gradients or activations at "
            f"its explained layer are all zero here); shown instead: {fallback}."
        )
        cam = await runner.cam(
            entry, image, head=output, method=fallback, class_index=cam.class_index
        )
        used = fallback
    if float(np.max(cam.heatmap)) <= EMPTY_MAP:
        note = (
            "No method found a region this decision depends on: the model's output does not "
            "change when any part of the image does, so there is nothing to show."
        )
    ex = Explanation(entry, head, used, cam, None, note)
    if faithfulness:
        ex.faithfulness = await score_explanation(runner, settings, ex, decoded)
    return ex


async def score_explanation(
    runner: InferenceRunner, settings: Settings, ex: Explanation, decoded: Decoded
) -> dict[str, Any]:
    """The deletion/insertion scores of an explanation's map (see :func:`_faithfulness`)."""
    image = decoded.input_for(ex.entry.input_size)
    return await _faithfulness(runner, settings, ex.entry, image, ex.cam, ex.head)


async def _faithfulness(
    runner: InferenceRunner,
    settings: Settings,
    entry: ModelEntry,
    image: np.ndarray,
    cam: CamOutput,
    head: str,
) -> dict[str, Any]:
    """Deletion/insertion scores of ``cam``'s map, its perturbed images batched across requests.

    The unperturbed image's probabilities come from the CAM pass (they do not change), so only
    the perturbed images run: ``1 + (steps - 1) * 3`` of them with one random order. Coarse
    first, for a model of at least ``faithfulness_coarse_first_gflops`` a pass: the baseline
    and the three half-way images (4 images) run before the rest, and when the explained
    probability moves by less than 0.01 across them the score stops there (``steps`` 2,
    ``images_run`` 4, a sentence that says so). Otherwise the rest run and the result is the
    one-shot result, which a cheaper model gets in one round.
    """
    from ml.explain.faithfulness import (
        Plan,
        coarse_rows,
        flat_at_coarse_note,
        has_coarse_step,
        plan_deletion_insertion,
        score_deletion_insertion,
    )

    def planned(steps: int) -> Plan:
        return plan_deletion_insertion(image, cam.heatmap, steps=steps, n_random=1)

    steps = settings.faithfulness_steps
    output = HEAD_OUTPUTS[head]
    names = entry.stage_names if head == "stage" else entry.status_names
    unperturbed = np.asarray(cam.probabilities, np.float64)[None]
    flops = float(entry.manifest.flops or 0)
    coarse_probs: np.ndarray | None = None
    if flops >= settings.faithfulness_coarse_first_gflops * 1e9 and has_coarse_step(steps):
        # The 2-step plan (same seed) is exactly the full plan's coarse rows: build and run
        # only those 4 images first.
        two = await asyncio.to_thread(planned, 2)
        coarse_probs = np.concatenate(
            [unperturbed, await runner.probe(entry, two.images[1:], head=output)]
        )
        result = score_deletion_insertion(two, coarse_probs, cam.class_index, names)
        if result["flat"]:
            result["interpretation"] = flat_at_coarse_note(names, result["class_index"])
            result["n_forward"] = len(two.images) - 1
            return result
    plan = await asyncio.to_thread(planned, steps)
    probs = np.zeros((len(plan.images), unperturbed.shape[1]), np.float64)
    probs[0] = unperturbed[0]
    todo = np.arange(1, len(plan.images))
    rows = coarse_rows(plan) if coarse_probs is not None else None
    if rows is not None:
        probs[rows] = coarse_probs  # run already
        todo = np.setdiff1d(todo, rows)
    probs[todo] = await runner.probe(entry, plan.images[todo], head=output)
    result = score_deletion_insertion(plan, probs, cam.class_index, names)
    result["n_forward"] = len(plan.images) - 1
    return result
