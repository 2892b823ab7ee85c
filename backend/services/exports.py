"""Export use cases: a stored study or analysis as DICOM SEG / SR / parametric maps / secondary
captures (one zip; SEG and SR also alone) or as a FHIR R4 bundle, for its owner (or an admin).

The objects are built on request from what the result stored: the source headers
(``sources.zip``, see ``interop.sources``), the mask (``mask.nii.gz`` of a study, ``mask.png`` of a
slice), the raw heatmaps (``*raw-*.npz``), the heatmap pictures (``*gradcam-*.png``) and the
result's answers. Their UIDs derive from the
result's id, so exporting again (or pushing again) gives the same objects.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import re
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import AppError, NotFound
from backend.interop.dicom_out import (
    ExportError,
    ExportInput,
    ModelAnswer,
    build_parametric_maps,
    build_secondary_captures,
    build_seg,
    build_sr,
    to_bytes,
)
from backend.interop.fhir import FhirInput, build_bundle
from backend.interop.sources import SOURCES_FILE, unpack_sources
from backend.repositories import analyses as analyses_repo
from backend.services.auth import Principal
from backend.storage.artifacts import ArtifactStore

log = logging.getLogger(__name__)

DICOM = "application/dicom"


@dataclass
class Exported:
    body: bytes
    media_type: str
    filename: str


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spondyscan")
    except PackageNotFoundError:
        return "0"


def _answer(
    model: dict[str, Any], p_positive: float | None, status: str, stage: str
) -> ModelAnswer:
    return ModelAnswer(
        key=model["key"],
        version=model["version"],
        display_name=model.get("display_name", model["key"]),
        as_status=status,
        stage=stage,
        p_positive=p_positive,
        label_source=model.get("label_source", "unknown"),
    )


def _answers(result: dict[str, Any]) -> list[ModelAnswer]:
    """Each classifier's answer (a study's aggregate, or a slice's classification)."""
    out: list[ModelAnswer] = []
    if result.get("withheld"):
        return out
    if result["kind"] == "study":
        for m in result.get("models") or []:
            model = {**m["model"], "label_source": m["label_provenance"]["label_source"]}
            out.append(_answer(model, m.get("p_positive_mean"), m["as_status"], m["stage"]))
        return out
    for c in result.get("classifications") or []:
        model = {**c["model"], "label_source": c["label_provenance"]["label_source"]}
        p = (c.get("as_probabilities") or {}).get("positive")
        out.append(_answer(model, p, c["as_status"], c["stage"]))
    return out


def _per_model_files(
    store: ArtifactStore, rid: uuid.UUID, result: dict[str, Any], kinds: tuple[str, ...], ext: str
) -> dict[str, dict[int, str]]:
    """model -> {result slice -> stored name} of the AS-status explanation files of the first of
    ``kinds`` stored (``raw``: the map's values; ``focused``, ``gradcam``: the map over the slice,
    focused on the region or not) of a study or a slice."""
    from backend.inference.mappers import slug

    names = store.names(rid)

    def first(candidates: list[str]) -> str | None:
        return next((n for n in candidates if n in names), None)

    by_model: dict[str, dict[int, str]] = {}
    if result["kind"] == "study":
        for s in result["slices"]:
            for h in s.get("heatmaps") or []:
                base = f"{slug(h['model'])}-binary.{ext}"
                name = first([f"s{s['index']:04d}-{kind}-{base}" for kind in kinds])
                if name is not None:
                    by_model.setdefault(h["model"], {})[s["index"]] = name
        return by_model
    explanations = result.get("explanations") or (
        [result["explanation"]] if result.get("explanation") else []
    )
    for e in explanations:
        if e["head"] != "binary":
            continue
        base = f"{slug(e['model']['key'])}-binary.{ext}"
        name = first([f"{k}-{b}" for k in kinds for b in (base, f"binary.{ext}")])
        if name is not None:
            by_model[e["model"]["key"]] = {0: name}
    return by_model


def _raw_heatmaps(store: ArtifactStore, rid: uuid.UUID, result: dict[str, Any]) -> dict:
    """model -> {slice index -> 256x256 map} from the result's ``*raw-*-binary.npz`` files."""
    files = _per_model_files(store, rid, result, ("raw",), "npz")
    return {m: {i: _npz(store, rid, n) for i, n in f.items()} for m, f in files.items()}


def _methods(result: dict[str, Any]) -> dict[str, str]:
    """model -> the method of its AS-status heatmaps in the result (what the exports must name)."""
    if result["kind"] == "study":
        return {
            h["model"]: h.get("method") or "gradcam"
            for s in result["slices"]
            for h in s.get("heatmaps") or []
        }
    explanations = result.get("explanations") or (
        [result["explanation"]] if result.get("explanation") else []
    )
    return {e["model"]["key"]: e["method"] for e in explanations if e["head"] == "binary"}


def _pictures(store: ArtifactStore, rid: uuid.UUID, result: dict[str, Any]) -> dict:
    """model -> {slice index -> RGB uint8}: the heatmap-over-slice pictures the web app shows."""
    import cv2

    def rgb(name: str) -> np.ndarray:
        path = store.path(rid, name)
        assert path is not None
        bgr = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ExportError("no_heatmaps", "A stored heatmap picture cannot be read.")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    files = _per_model_files(store, rid, result, ("focused", "gradcam"), "png")
    return {m: {i: rgb(n) for i, n in f.items()} for m, f in files.items()}


def _npz(store: ArtifactStore, rid: uuid.UUID, name: str) -> np.ndarray:
    path = store.path(rid, name)
    assert path is not None
    with np.load(path) as data:
        return np.asarray(data["heat"], dtype=np.float32)


def _slice_mask(store: ArtifactStore, rid: uuid.UUID, rows: int, cols: int) -> np.ndarray:
    import cv2

    path = store.path(rid, "mask.png")
    if path is None:
        raise ExportError("no_segmentation", "This result has no segmentation to encode.")
    png = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
    if png is None:
        raise ExportError("no_segmentation", "The stored mask cannot be read.")
    return cv2.resize(png, (cols, rows), interpolation=cv2.INTER_NEAREST)[None] > 127


def _study_mask(store: ArtifactStore, rid: uuid.UUID) -> np.ndarray:
    import nibabel as nib

    path = store.path(rid, "mask.nii.gz")
    if path is None:
        raise ExportError("no_segmentation", "This study has no mask to encode.")
    img = nib.Nifti1Image.from_bytes(gzip.decompress(path.read_bytes()))
    # A DICOM series' mask is voxel (column, row, slice) in the series' order.
    return np.transpose(np.asarray(img.dataobj) > 0, (2, 1, 0))


def _frames(result: dict[str, Any], sources: list[Any]) -> list[tuple[int, int | None]]:
    index = {str(ds.SOPInstanceUID): k for k, ds in enumerate(sources)}
    if result["kind"] != "study":
        return [(0, (result.get("image") or {}).get("frame"))]
    frames = []
    for s in result["slices"]:
        k = index.get(s.get("sop_instance_uid") or "")
        if k is None:
            raise ExportError("unsupported_source", "A slice's source instance is not on record.")
        frames.append((k, s.get("frame")))
    return frames


def _measure(result: dict[str, Any], mask: np.ndarray, sources: list[Any]) -> tuple[str, float]:
    """("volume", ml) of a study, ("area", mm2) of a slice."""
    if result["kind"] == "study":
        return "volume", float((result.get("segmentation") or {}).get("volume_ml") or 0.0)
    spacing = [float(v) for v in sources[0].get("PixelSpacing", [1.0, 1.0])]
    return "area", float(mask.sum()) * spacing[0] * spacing[1]


def _build_input(store: ArtifactStore, row: Any) -> tuple[ExportInput, dict[str, Any]]:
    result = dict(row.result)
    path = store.path(row.id, SOURCES_FILE)
    if path is None:
        raise ExportError(
            "no_dicom_source",
            "This result's input was not DICOM, so no DICOM object can refer to it.",
        )
    sources = unpack_sources(path.read_bytes())
    if result["kind"] == "study":
        mask, seg = _study_mask(store, row.id), result.get("segmentation") or {}
    else:
        ds = sources[0]
        mask = _slice_mask(store, row.id, int(ds.Rows), int(ds.Columns))
        seg = result.get("segmentation") or {}
    seg_model = seg.get("model") or {"key": "none", "version": "0"}
    inp = ExportInput(
        result_id=row.id,
        sources=sources,
        frames=_frames(result, sources),
        mask=mask,
        seg_model=(seg_model["key"], seg_model["version"]),
        answers=_answers(result),
        heatmaps=_raw_heatmaps(store, row.id, result),
        methods=_methods(result),
        software_version=_software_version(),
    )
    return inp, result


def dicom_objects(store: ArtifactStore, row: Any, which: str) -> list[tuple[str, bytes]]:
    """(file name, bytes) of the objects asked for: seg, sr, pm or all (blocking)."""
    inp, result = _build_input(store, row)
    seg = build_seg(inp)
    if which == "seg":
        return [("seg.dcm", to_bytes(seg))]
    what, value = _measure(result, inp.mask, inp.sources)
    sr = build_sr(
        inp, seg, value if what == "volume" else None, area_mm2=value if what == "area" else None
    )
    if which == "sr":
        return [("sr.dcm", to_bytes(sr))]
    out = [("seg.dcm", to_bytes(seg)), ("sr.dcm", to_bytes(sr))]
    # The parametric maps and the captures are extras beside the SEG and SR: a source they
    # cannot describe (no geometry, no orientation) leaves them out, not the rest.
    if inp.heatmaps and all(f is None for _, f in inp.frames):
        for pm in _extra(row.id, "parametric maps", lambda: build_parametric_maps(inp)):
            model = re.sub(r"[^a-z0-9_-]+", "-", str(pm.ManufacturerModelName).lower())
            out.append((f"pm-{model.removeprefix('spondyscan-')}.dcm", to_bytes(pm)))

    def captures() -> list[Any]:
        pictures = _pictures(store, row.id, result)
        return build_secondary_captures(inp, pictures) if pictures else []

    for n, sc in enumerate(_extra(row.id, "secondary captures", captures), start=1):
        out.append((f"sc-{n:03d}.dcm", to_bytes(sc)))
    return out


def _extra(result_id: uuid.UUID, what: str, build: Callable[[], list[Any]]) -> list[Any]:
    """The objects ``build`` makes, or none (logged) when the source cannot carry them."""
    try:
        return build()
    except ExportError as exc:
        log.warning("result %s: no %s (%s)", result_id, what, exc.code)
        return []


def fhir_bundle(store: ArtifactStore, row: Any) -> dict[str, Any]:
    """The FHIR bundle of a stored result (blocking)."""
    result = dict(row.result)
    study_uid = series_uid = None
    patient: dict[str, str] = {}
    instances = 0
    path = store.path(row.id, SOURCES_FILE)
    if path is not None:
        sources = unpack_sources(path.read_bytes())
        study_uid = str(sources[0].get("StudyInstanceUID", "")) or None
        series_uid = str(sources[0].get("SeriesInstanceUID", "")) or None
        patient = {"PatientID": str(sources[0].get("PatientID", ""))}
        instances = len(sources)
    return build_bundle(
        FhirInput(
            result_id=row.id,
            issued=row.created_at.isoformat(),
            answers=_answers(result),
            study_uid=study_uid,
            series_uid=series_uid,
            instances=instances,
            patient=patient,
            software_version=_software_version(),
        )
    )


async def _owned(
    session: AsyncSession, principal: Principal, rid: uuid.UUID, *, study: bool
) -> Any:
    row = await analyses_repo.get_analysis_for(
        session, rid, principal.user_id, admin=principal.is_admin
    )
    if study:
        from backend.repositories import studies as studies_repo

        st = await studies_repo.get_study_for(
            session, rid, principal.user_id, admin=principal.is_admin
        )
        if st is None:
            raise NotFound("No such study.", code="study_not_found")
        if row is None:
            raise AppError(
                f"The study is {st.status}; its exports exist once it is done.",
                code="study_not_done",
                status_code=409,
            )
        return row
    if row is None or row.kind == "study":
        raise NotFound("No such result in your history.", code="analysis_not_found")
    return row


def _http_error(exc: ExportError) -> AppError:
    status = 422 if exc.code in ("unsupported_source",) else 409
    return AppError(exc.message, code=exc.code, status_code=status)


async def export(
    session: AsyncSession,
    store: ArtifactStore,
    principal: Principal,
    rid: uuid.UUID,
    which: str,
    *,
    study: bool,
) -> Exported:
    """``which``: dicom (zip of every object), seg, sr or fhir."""
    row = await _owned(session, principal, rid, study=study)
    kind = "study" if study else "analysis"
    try:
        if which == "fhir":
            import json

            bundle = await asyncio.to_thread(fhir_bundle, store, row)
            return Exported(
                json.dumps(bundle).encode(),
                "application/fhir+json",
                f"spondyscan-{kind}-{rid}.json",
            )
        objects = await asyncio.to_thread(
            dicom_objects, store, row, "all" if which == "dicom" else which
        )
    except ExportError as exc:
        raise _http_error(exc) from exc
    if which != "dicom":
        name, body = objects[0]
        return Exported(body, DICOM, f"spondyscan-{kind}-{rid}-{name}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in objects:
            zf.writestr(name, body)
    return Exported(buf.getvalue(), "application/zip", f"spondyscan-{kind}-{rid}-dicom.zip")
