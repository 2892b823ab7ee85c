"""Results as DICOM objects a PACS stores and a viewer shows (highdicom):

* **SEG**: the segmented vertebral bodies as one binary segment on the source grid, referencing
  the source series and, per frame, its source image;
* **SR**: a TID 1500 measurement report (Comprehensive 3D SR) with the segmented volume (TID 1411,
  referencing the SEG) and, per model, AS status and stage as qualitative evaluations and
  P(AS positive) as a measurement - coded in ``99SPONDYSCAN``, a scheme that says they are
  research labels learnt from image-feature rules; ``VerificationFlag`` UNVERIFIED; the
  algorithm in ``ContributingEquipmentSequence`` (IHE AI Results);
* **parametric map**: each model's heatmaps of the key slices, values 0-1, labelled with the
  method that made them (Grad-CAM: quantity DCM 130403, gradient-weighted class activation; the
  other methods, e.g. occlusion, in ``99SPONDYSCAN``);
* **secondary capture**: the same heatmaps as the pictures the web app shows (the map over the
  slice, RGB, a banner saying what it is burnt in), for viewers that show neither SEG nor
  parametric maps: one series, an instance per model and key slice, each referencing its source.

Every object's series description says research use only, not for diagnostic use. UIDs are
derived from the result's id, so exporting twice gives the same objects (a PACS keeps one).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEME = "99SPONDYSCAN"
SCHEME_NAME = "spondyscan research labels (learnt from image-feature rules, not radiologists)"
NOTICE = "research use only, not for diagnostic use"
MANUFACTURER = "spondyscan"
SERIES_NUMBERS = {"seg": 9101, "sr": 9102, "pm": 9103, "sc": 9201}


class ExportError(ValueError):
    """The result cannot be expressed as this object (``code``: no_dicom_source, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class ModelAnswer:
    """One classifier's answer as the SR and FHIR report it."""

    key: str
    version: str
    display_name: str
    as_status: str
    stage: str
    p_positive: float | None
    label_source: str


@dataclass
class ExportInput:
    """What the writers need: the result's id, the source headers (``interop.sources``), each
    result slice's (source index, frame), the mask on the source grid, the answers, heatmaps."""

    result_id: uuid.UUID
    sources: list[Any]
    frames: list[tuple[int, int | None]]
    mask: np.ndarray  # (slices, rows, cols), bool
    seg_model: tuple[str, str]  # key, version
    answers: list[ModelAnswer] = field(default_factory=list)
    heatmaps: dict[str, dict[int, np.ndarray]] = field(
        default_factory=dict
    )  # model -> slice -> map
    methods: dict[str, str] = field(default_factory=dict)  # model -> how its maps were made
    software_version: str = "0"


def _uid(result_id: uuid.UUID, what: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(result_id), what]))


def _code(value: str, meaning: str) -> Any:
    from pydicom.sr.coding import Code

    return Code(value, SCHEME, meaning)


def _equipment(inp: ExportInput, what: str) -> list[Any]:
    from highdicom.base_content import ContributingEquipment
    from pydicom.sr.codedict import codes

    return [
        ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=f"spondyscan {inp.seg_model[0]}"[:64],
            software_versions=inp.software_version,
            contribution_datetime=dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S"),
            contribution_description=f"{what}; {NOTICE}"[:64],
        )
    ]


def _single_frame_sources(inp: ExportInput) -> bool:
    return all(frame is None for _, frame in inp.frames)


def _check(inp: ExportInput) -> None:
    if not inp.sources:
        raise ExportError(
            "no_dicom_source",
            "This result has no DICOM source (the input was not DICOM), so no DICOM object "
            "can refer to it.",
        )
    for ds in inp.sources:
        for key in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns"):
            if key not in ds:
                raise ExportError(
                    "unsupported_source", f"The source DICOM lacks {key}; it cannot be referenced."
                )


def _seg_frames(inp: ExportInput) -> tuple[list[Any], np.ndarray]:
    """Source images and the mask frames in their order (one per source frame)."""
    if _single_frame_sources(inp):
        return [inp.sources[s] for s, _ in inp.frames], inp.mask.astype(bool)
    source = inp.sources[0]
    n = int(source.get("NumberOfFrames", 1))
    frames = np.zeros((n, *inp.mask.shape[1:]), dtype=bool)
    for k, (_, frame) in enumerate(inp.frames):
        frames[int(frame or 0)] = inp.mask[k]
    return [source], frames


def build_seg(inp: ExportInput) -> Any:
    """The binary SEG of the vertebral bodies on the source grid."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    _check(inp)
    images, frames = _seg_frames(inp)
    if not frames.any():
        raise ExportError("empty_mask", "The segmentation is empty; there is nothing to encode.")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"spondyscan {inp.seg_model[0]}",
        family=codes.DCM.ArtificialIntelligence,
        version=inp.seg_model[1],
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Vertebral bodies",
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.Vertebra,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=_uid(inp.result_id, "seg-series"),
        series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=_uid(inp.result_id, "seg"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=f"spondyscan {inp.seg_model[0]}"[:64],
        software_versions=inp.software_version,
        device_serial_number="none",
        series_description=f"spondyscan vertebral bodies ({NOTICE})"[:64],
        content_label="VERTEBRAE",
        content_description=f"Automatic segmentation; {NOTICE}"[:64],
        contributing_equipment=_equipment(inp, "segmentation"),
    )
    if "PlaneOrientationSequence" not in seg.SharedFunctionalGroupsSequence[0]:
        # A source not placed in the patient (no orientation): General Image's Patient
        # Orientation is then required (Type 2C); the source's own, else present and empty.
        seg.PatientOrientation = images[0].get("PatientOrientation") or ""
    return seg


def _qualitative(answer: ModelAnswer) -> list[Any]:
    import highdicom as hd

    return [
        hd.sr.QualitativeEvaluation(
            name=_code("AS-STATUS", "AS status (research label)"),
            value=_code(
                f"AS-{answer.as_status.upper()}", f"AS {answer.as_status} (research label)"
            ),
        ),
        hd.sr.QualitativeEvaluation(
            name=_code("AS-STAGE", "AS stage (research label)"),
            value=_code(f"STAGE-{answer.stage.upper()}", f"{answer.stage} (research label)"),
        ),
    ]


def _model_group(answer: ModelAnswer, result_id: uuid.UUID) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.sr.AlgorithmIdentification(
        name=f"spondyscan {answer.key}"[:64],
        version=answer.version,
        family=codes.DCM.ArtificialIntelligence,
    )
    measurements = []
    if answer.p_positive is not None:
        measurements.append(
            hd.sr.Measurement(
                name=_code("P-AS-POSITIVE", "Probability of AS positive (model output)"),
                value=round(float(answer.p_positive), 4),
                unit=codes.UCUM.NoUnits,
                algorithm_id=algorithm,
            )
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_uid(result_id, f"track-{answer.key}"), identifier=f"model {answer.key}"[:64]
        ),
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=_qualitative(answer),
    )


def build_sr(
    inp: ExportInput, seg: Any, volume_ml: float | None, *, area_mm2: float | None = None
) -> Any:
    """The TID 1500 measurement report of the SEG's volume (a study) or area (one slice) and
    every model's answer."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    _check(inp)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid(inp.result_id, "device"),
            name="spondyscan",
            manufacturer_name=MANUFACTURER,
            model_name="spondyscan AS research models",
        ),
    )
    source = inp.sources[0]
    volume_group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_uid(inp.result_id, "track-seg"), identifier="vertebral bodies"
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=1,
            source_series=hd.sr.SourceSeriesForSegmentation(source.SeriesInstanceUID),
        ),
        finding_type=codes.SCT.Vertebra,
        measurements=[
            hd.sr.Measurement(
                name=codes.SCT.Volume,
                value=round(float(volume_ml), 3),
                unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"),
            )
            if volume_ml is not None
            else hd.sr.Measurement(
                name=codes.SCT.Area,
                value=round(float(area_mm2 or 0.0), 2),
                unit=hd.sr.CodedConcept("mm2", "UCUM", "square millimeter"),
            )
        ],
    )
    groups = [volume_group] + [_model_group(a, inp.result_id) for a in inp.answers]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.MRISpineReport,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *inp.sources],
        content=report,
        series_instance_uid=_uid(inp.result_id, "sr-series"),
        series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=_uid(inp.result_id, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=f"spondyscan AS report ({NOTICE})"[:64],
        contributing_equipment=_equipment(inp, "AS classification report"),
    )
    sr.CodingSchemeIdentificationSequence = [_scheme_identification()]
    return sr


def _scheme_identification() -> Any:
    """The item that names our private coding scheme in a dataset that uses its codes."""
    from pydicom.dataset import Dataset

    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    return scheme


# Each explanation method's label (a DICOM CS, at most 16 characters) and name. Grad-CAM has its
# DICOM concept (DCM 130403); the others are named in the project's own coding scheme.
METHOD_LABELS: dict[str, tuple[str, str]] = {
    "gradcam": ("GRADCAM", "Grad-CAM"),
    "gradcam++": ("GRADCAM_PP", "Grad-CAM++"),
    "eigencam": ("EIGENCAM", "Eigen-CAM"),
    "attention": ("ATTENTION", "Attention map"),
    "occlusion": ("OCCLUSION", "Occlusion sensitivity"),
    "rise": ("RISE", "RISE saliency"),
    "integrated_gradients": ("INT_GRADIENTS", "Integrated gradients"),
}


def _method_quantity(method: str) -> tuple[str, str, Any]:
    """(label, name, quantity concept) of the maps one method makes."""
    from pydicom.sr.codedict import codes

    label, name = METHOD_LABELS.get(method, (method.upper()[:16], method))
    if method == "gradcam":
        return label, name, codes.DCM.GradientWeightedClassActivation
    return label, name, _code(label, f"{name} saliency map")


def build_parametric_maps(inp: ExportInput) -> list[Any]:
    """One parametric map per model: its heatmap of each key slice on the source grid, labelled
    with the method that made it (Grad-CAM: quantity DCM 130403; the others in our scheme)."""
    import cv2
    import highdicom as hd
    from pydicom.sr.codedict import codes

    _check(inp)
    if not _single_frame_sources(inp):
        raise ExportError(
            "unsupported_source",
            "Heatmaps are exported for series of single-frame instances; this one is multi-frame.",
        )
    placed = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
    if not all(all(key in ds for key in placed) for ds in inp.sources):
        raise ExportError(
            "unsupported_source",
            "Heatmaps are exported as parametric maps for images placed in the patient "
            "(position, orientation and spacing); this source has no such geometry.",
        )
    maps = []
    rows, cols = inp.mask.shape[1:]
    for n, (model, by_slice) in enumerate(sorted(inp.heatmaps.items())):
        if not by_slice:
            continue
        order = sorted(by_slice)
        images = [inp.sources[inp.frames[i][0]] for i in order]
        pixels = np.stack(
            [
                cv2.resize(
                    np.asarray(by_slice[i], np.float32),
                    (cols, rows),
                    interpolation=cv2.INTER_LINEAR,
                )
                for i in order
            ]
        ).clip(0.0, 1.0)
        label, method, quantity = _method_quantity(inp.methods.get(model, "gradcam"))
        mapping = hd.pm.RealWorldValueMapping(
            lut_label=label,
            lut_explanation=f"{method} of {model} (0-1)"[:64],
            unit=codes.UCUM.NoUnits,
            value_range=(0.0, 1.0),
            slope=1.0,
            intercept=0.0,
            quantity_definition=quantity,
        )
        pm = hd.pm.ParametricMap(
            source_images=images,
            pixel_array=pixels.astype(np.float32),
            series_instance_uid=_uid(inp.result_id, f"pm-series-{model}"),
            series_number=SERIES_NUMBERS["pm"] + n,
            sop_instance_uid=_uid(inp.result_id, f"pm-{model}"),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=f"spondyscan {model}"[:64],
            software_versions=inp.software_version,
            device_serial_number="none",
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
            series_description=f"spondyscan {method} {model} ({NOTICE})"[:64],
            content_label=label,
            content_description=f"{method}; {NOTICE}"[:64],
            contributing_equipment=_equipment(inp, f"{method} {model}"),
        )
        if quantity.scheme_designator == SCHEME:
            pm.CodingSchemeIdentificationSequence = [_scheme_identification()]
        maps.append(pm)
    for pm in maps:
        # Type 2C in General Series: present and empty, the heatmap is of a midline structure.
        pm.Laterality = ""
    if not maps:
        raise ExportError("no_heatmaps", "This result has no heatmaps (it was run without them).")
    return maps


CAPTURE_MIN_WIDTH = 512  # px: the banner's text is legible at this width


def with_banner(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with a black strip on top holding ``lines`` in white, one text
    line each, scaled to fit the width (what an old viewer shows is then labelled in the pixels
    themselves)."""
    import cv2

    rgb = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[..., :3])
    width = rgb.shape[1]
    line_height = max(20, width // 24)
    font = cv2.FONT_HERSHEY_SIMPLEX
    strip = np.zeros((line_height * len(lines) + 4, width, 3), np.uint8)
    for n, text in enumerate(lines):
        (w, h), _ = cv2.getTextSize(text, font, 1.0, 1)
        scale = min((line_height * 0.6) / h, (width - 8) / w)
        baseline_y = int(2 + line_height * n + line_height / 2 + h * scale / 2)
        cv2.putText(strip, text, (4, baseline_y), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, rgb], axis=0)


def _shared_attribute(source: Any, name: str, group: str) -> Any:
    """``name`` of a source image, or of its shared functional ``group`` (Enhanced MR)."""
    value = source.get(name)
    if value is None:
        with contextlib.suppress(AttributeError, IndexError, KeyError):
            value = getattr(source.SharedFunctionalGroupsSequence[0], group)[0].get(name)
    return value


def _pixel_spacing(source: Any) -> tuple[float, float]:
    """(row, column) spacing in mm of a source image; 1:1 when it does not say."""
    spacing = _shared_attribute(source, "PixelSpacing", "PixelMeasuresSequence")
    try:
        row, col = float(spacing[0]), float(spacing[1])
    except (TypeError, ValueError, IndexError):
        return 1.0, 1.0
    return (row, col) if row > 0 and col > 0 else (1.0, 1.0)


def capture_picture(rgb: np.ndarray, source: Any) -> np.ndarray:
    """The web app's (square) picture back at the source's proportions, at least
    ``CAPTURE_MIN_WIDTH`` wide; nearest-neighbour, so every pixel keeps the colour shown."""
    import cv2

    row_mm, col_mm = _pixel_spacing(source)
    height_mm, width_mm = int(source.Rows) * row_mm, int(source.Columns) * col_mm
    factor = -(-CAPTURE_MIN_WIDTH // rgb.shape[1])  # ceiling division
    width = rgb.shape[1] * max(1, factor)
    height = max(1, round(width * height_mm / width_mm))
    return cv2.resize(np.asarray(rgb, np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)


def _orientation_letters(cosines: Any) -> str:
    """Patient-orientation letters of one direction (PS3.3 C.7.6.1.1.1), most significant first."""
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    parts = sorted(
        (
            (abs(float(c)), letters[axis][0 if float(c) > 0 else 1])
            for axis, c in enumerate(cosines)
        ),
        reverse=True,
    )
    return "".join(letter for size, letter in parts if size > 0.25)[:3]


def _patient_orientation(source: Any) -> tuple[str, str]:
    """(row, column) directions of a source image: from its Image Orientation (Patient), else
    its own Patient Orientation. Oblique directions have up to three letters (e.g. "FP")."""
    iop = _shared_attribute(source, "ImageOrientationPatient", "PlaneOrientationSequence")
    if iop is not None and len(iop) == 6:
        return _orientation_letters(iop[:3]), _orientation_letters(iop[3:])
    given = [str(v) for v in (source.get("PatientOrientation") or [])]
    if len(given) == 2 and all(given):
        return given[0], given[1]
    raise ExportError(
        "unsupported_source", "The source image has no orientation; it cannot be captured."
    )


def build_secondary_captures(
    inp: ExportInput, pictures: dict[str, dict[int, np.ndarray]]
) -> list[Any]:
    """The heatmap pictures (model -> result slice -> RGB overlay) as secondary captures."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    _check(inp)
    out: list[Any] = []
    series_uid = _uid(inp.result_id, "sc-series")
    for model, by_slice in sorted(pictures.items()):
        for i in sorted(by_slice):
            index, frame = inp.frames[i]
            source = inp.sources[index]
            lines = [f"spondyscan {model} heatmap", NOTICE]
            row_dir, col_dir = _patient_orientation(source)
            sc = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=source,
                pixel_array=with_banner(capture_picture(by_slice[i], source), lines),
                photometric_interpretation="RGB",
                bits_allocated=8,
                coordinate_system="PATIENT",
                series_instance_uid=series_uid,
                series_number=SERIES_NUMBERS["sc"],
                sop_instance_uid=_uid(inp.result_id, f"sc-{model}-{i}"),
                instance_number=len(out) + 1,
                manufacturer=MANUFACTURER,
                # highdicom takes single letters; the full (oblique) values are set below.
                patient_orientation=(row_dir[0], col_dir[0]),
                contributing_equipment=_equipment(inp, f"Heatmap picture {model}"),
            )
            ref = Dataset()
            ref.ReferencedSOPClassUID = source.SOPClassUID
            ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
            if frame is not None:
                ref.ReferencedFrameNumber = int(frame) + 1
            sc.SourceImageSequence = [ref]
            sc.SeriesDescription = f"spondyscan heatmaps ({NOTICE})"[:64]
            sc.DerivationDescription = f"Heatmap of {model} over the analysed slice"[:1024]
            sc.ImageComments = (
                f"{model}: where the image drove the AS-status answer (warm = more); {NOTICE}."
            )
            sc.PatientOrientation = [row_dir, col_dir]
            # The banner names the model and the notice: nothing that identifies the patient.
            sc.BurnedInAnnotation = "NO"
            # Type 2C in General Series: present and empty, the slice is of a midline structure.
            sc.Laterality = ""
            out.append(sc)
    if not out:
        raise ExportError("no_heatmaps", "This result has no heatmaps (it was run without them).")
    return out


def to_bytes(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
