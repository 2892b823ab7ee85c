"""Whole series in: DICOM instances (single- or multi-frame) or a NIfTI volume, as one ordered
stack of sagittal slices with its geometry.

Instances are grouped by ``SeriesInstanceUID`` and ordered by their position along the slice
normal (``ImagePositionPatient`` projected on ``ImageOrientationPatient``'s normal), never by file
name or instance number. Headers are read first (no pixels), so an upload that mixes patients,
is not MR, is not sagittal or has inconsistent geometry is refused before anything is decoded;
pixel data is decoded one slice at a time under the same limits as a single image.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml.io import (
    DEFAULT_MAX_DECODED_BYTES,
    ImageError,
    check_dicom_size,
    dicom_float,
    nifti_bytes,
)

# A sagittal plane's normal runs left-right: |normal . x| above this (about 30 degrees).
SAGITTAL_COSINE = 0.85
MIN_SLICES = 3
# A volume whose voxels are this much thicker along another axis than left-right is not sagittal.
ANISOTROPY = 1.5
# Patient-module and study attributes an output object (SEG, SR) must carry; nothing else of
# the patient is kept.
PATIENT_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYS = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "StudyDescription",
)


# An uploaded file: its bytes, or where it is stored.
Source = bytes | Path


def unsafe_name(name: str) -> bool:
    """An archive member name that could escape a folder if extracted (absolute, ``..``, a
    drive letter, a backslash path or a NUL)."""
    from pathlib import PurePosixPath

    if "\x00" in name or "\\" in name or name.startswith("/"):
        return True
    if len(name) > 1 and name[1] == ":" and name[0].isalpha():
        return True
    return any(part == ".." for part in PurePosixPath(name).parts)


class SeriesError(ImageError):
    """A series that cannot be analysed (code: no_images, mixed_patients, not_sagittal, ...)."""


@dataclass
class SliceRef:
    """One slice of the series: where its pixels come from and where it lies."""

    source: int  # index into the uploaded files
    name: str
    sop_uid: str
    frame: int | None  # frame of a multi-frame instance
    position: np.ndarray  # ImagePositionPatient (LPS, mm)
    along: float = 0.0  # position along the slice normal


@dataclass
class Series:
    """An ordered stack of slices and what an output object needs to refer back to it."""

    format: str  # dicom | dicom-multiframe | nifti
    rows: int
    cols: int
    slices: list[SliceRef]
    orientation: np.ndarray  # (6,) row and column direction cosines (LPS)
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing), mm
    slice_spacing: float
    modality: str = "MR"
    series_uid: str = ""
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    sop_class_uid: str = ""
    series_description: str = ""
    patient: dict[str, str] = field(default_factory=dict)
    study: dict[str, str] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    other_series: list[dict[str, Any]] = field(default_factory=list)
    # NIfTI: the decoded volume (slices, rows, cols) and the file's own affine.
    volume: np.ndarray | None = None
    nifti_affine: np.ndarray | None = None
    nifti_shape: tuple[int, ...] | None = None

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])

    @property
    def is_sagittal(self) -> bool:
        return abs(float(self.normal[0])) >= SAGITTAL_COSINE

    def affine(self) -> np.ndarray:
        """Voxel (column, row, slice) -> RAS millimetres, for a NIfTI of the series' grid."""
        row_dir, col_dir = self.orientation[:3], self.orientation[3:]
        first = self.slices[0].position
        step = (
            (self.slices[-1].position - first) / (len(self.slices) - 1)
            if len(self.slices) > 1
            else self.normal * self.slice_spacing
        )
        lps = np.eye(4)
        lps[:3, 0] = row_dir * self.pixel_spacing[1]
        lps[:3, 1] = col_dir * self.pixel_spacing[0]
        lps[:3, 2] = step
        lps[:3, 3] = first
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS

    def summary(self) -> dict[str, Any]:
        """What the API shows about the input (no patient data)."""
        return {
            "format": self.format,
            "slices": len(self.slices),
            "rows": self.rows,
            "cols": self.cols,
            "modality": self.modality,
            "sagittal": self.is_sagittal,
            "pixel_spacing": list(self.pixel_spacing),
            "slice_spacing": round(float(self.slice_spacing), 4),
            "series_uid": self.series_uid,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "other_series": self.other_series,
        }


@dataclass
class _Instance:
    index: int
    name: str
    ds: Any


def _text(ds: Any, key: str) -> str:
    value = ds.get(key, "")
    return "" if value is None else str(value)


def _floats(value: Any, n: int, what: str) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SeriesError("inconsistent_geometry", f"The {what} is not numeric.") from exc
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise SeriesError("inconsistent_geometry", f"The {what} needs {n} finite numbers.")
    return arr


def _open(source: bytes | Path) -> Any:
    return io.BytesIO(source) if isinstance(source, bytes | bytearray) else source


def _expected_pixel_bytes(ds: Any) -> int:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    return int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * frames * spp * bits // 8


def _truncated(ds: Any, warned: bool) -> bool:
    """Whether the pixel data stops short (a cut-off transfer or a partly written file)."""
    expected = _expected_pixel_bytes(ds)  # reads the size attributes of every file
    if warned:  # pydicom warns when an encapsulated sequence has no end delimiter
        return True
    if (
        ds.file_meta.get("TransferSyntaxUID") is not None
        and ds.file_meta.TransferSyntaxUID.is_compressed
    ):
        return False
    return len(ds.PixelData) < expected


def _read_headers(files: Sequence[tuple[str, Source]]) -> tuple[list[_Instance], list[dict]]:
    """Each file read once (one at a time), checked for whole pixel data, and kept as its
    header only, so a long series never holds all its pixels in memory at once."""
    import warnings

    import pydicom

    good, skipped = [], []
    for index, (name, source) in enumerate(files):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = pydicom.dcmread(_open(source))
                cut = any("End of file" in str(w.message) for w in caught)
                complete = "PixelData" in ds and not _truncated(ds, cut)
        except Exception:  # noqa: BLE001 - pydicom raises many types for malformed headers
            skipped.append({"name": name, "code": "corrupt_image", "reason": "not readable DICOM"})
            continue
        if cut or ("PixelData" in ds and not complete):
            skipped.append({"name": name, "code": "truncated", "reason": "pixel data cut short"})
            continue
        if "PixelData" not in ds:
            skipped.append({"name": name, "code": "empty_image", "reason": "no pixel data"})
            continue
        del ds.PixelData
        good.append(_Instance(index, name, ds))
    return good, skipped


def _frame_positions(inst: _Instance) -> list[tuple[int | None, np.ndarray, np.ndarray]]:
    """(frame, position, orientation) of each frame (Enhanced MR) or of the one image."""
    ds = inst.ds
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if frames > 1 and per_frame is not None:
        if len(per_frame) != frames:
            raise SeriesError(
                "inconsistent_geometry",
                f"The image has {frames} frames but {len(per_frame)} per-frame positions.",
            )
        out: list[tuple[int | None, np.ndarray, np.ndarray]] = []
        shared_item = shared[0] if shared else None
        for f, item in enumerate(per_frame):
            if not item.get("PlanePositionSequence"):
                raise SeriesError("inconsistent_geometry", f"Frame {f} has no position.")
            pos = item.PlanePositionSequence[0].get("ImagePositionPatient")
            ori_src = item if item.get("PlaneOrientationSequence") else shared_item
            if ori_src is None or not ori_src.get("PlaneOrientationSequence"):
                raise SeriesError("inconsistent_geometry", f"Frame {f} has no orientation.")
            ori = ori_src.PlaneOrientationSequence[0].get("ImageOrientationPatient")
            out.append((f, _floats(pos, 3, "position"), _floats(ori, 6, "orientation")))
        return out
    pos = _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient")
    ori = _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient")
    return [(None, pos, ori)]


def _spacing(ds: Any) -> tuple[float, float]:
    spacing = ds.get("PixelSpacing")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if spacing is None and shared:
        measures = shared[0].get("PixelMeasuresSequence")
        if measures:
            spacing = measures[0].get("PixelSpacing")
    if spacing is None:
        return (1.0, 1.0)
    row, col = _floats(spacing, 2, "PixelSpacing")
    return (float(row), float(col))


def _group(instances: list[_Instance]) -> dict[str, list[_Instance]]:
    groups: dict[str, list[_Instance]] = {}
    for inst in instances:
        groups.setdefault(_text(inst.ds, "SeriesInstanceUID") or "unknown", []).append(inst)
    return groups


def _check_one_patient(instances: list[_Instance]) -> None:
    patients = {(_text(i.ds, "PatientID"), _text(i.ds, "PatientName")) for i in instances}
    if len(patients) > 1:
        raise SeriesError(
            "mixed_patients",
            f"The upload holds images of {len(patients)} different patients; send one study.",
        )


def _build(group: list[_Instance], skipped: list[dict], limits: dict[str, Any]) -> Series:
    """One series from its instances: slices ordered along the normal, geometry checked."""
    first = group[0].ds
    rows, cols = int(first.get("Rows", 0)), int(first.get("Columns", 0))
    slices: list[SliceRef] = []
    orientation: np.ndarray | None = None
    seen: dict[str, str] = {}
    duplicates: list[str] = []
    for inst in group:
        ds = inst.ds
        check_dicom_size(ds, limits["max_pixels"], limits["max_frames"], limits["max_decoded"])
        if (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) != (rows, cols):
            raise SeriesError(
                "inconsistent_geometry", "The series' images do not all have the same size."
            )
        sop = _text(ds, "SOPInstanceUID")
        if sop and sop in seen:
            duplicates.append(inst.name)
            continue
        seen[sop] = inst.name
        for frame, pos, ori in _frame_positions(inst):
            if orientation is None:
                orientation = ori
            elif not np.allclose(ori, orientation, atol=1e-3):
                raise SeriesError(
                    "inconsistent_geometry", "The series' images are not all in one orientation."
                )
            slices.append(SliceRef(inst.index, inst.name, sop, frame, pos))
    if orientation is None:
        raise SeriesError("inconsistent_geometry", "The series' images have no position.")
    normal = np.cross(orientation[:3], orientation[3:])
    for s in slices:
        s.along = float(np.dot(s.position, normal))
    slices.sort(key=lambda s: s.along)
    alongs = np.asarray([s.along for s in slices])
    if len(alongs) > 1 and np.any(np.diff(alongs) < 1e-4):
        raise SeriesError(
            "inconsistent_geometry", "Two images of the series lie at the same position."
        )
    gaps = np.diff(alongs)
    return Series(
        format="dicom-multiframe" if slices and slices[0].frame is not None else "dicom",
        rows=rows,
        cols=cols,
        slices=slices,
        orientation=orientation,
        pixel_spacing=_spacing(first),
        slice_spacing=float(np.median(gaps)) if len(gaps) else 1.0,
        modality=_text(first, "Modality"),
        series_uid=_text(first, "SeriesInstanceUID"),
        study_uid=_text(first, "StudyInstanceUID"),
        frame_of_reference_uid=_text(first, "FrameOfReferenceUID"),
        sop_class_uid=_text(first, "SOPClassUID"),
        series_description=_text(first, "SeriesDescription"),
        patient={k: _text(first, k) for k in PATIENT_KEYS if _text(first, k)},
        study={k: _text(first, k) for k in STUDY_KEYS if _text(first, k)},
        skipped=skipped,
        duplicates=duplicates,
    )


def scan_dicom(
    files: Sequence[tuple[str, Source]],
    *,
    max_pixels: int | None = 40_000_000,
    max_frames: int | None = 2_000,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    min_slices: int = MIN_SLICES,
) -> Series:
    """The sagittal MR series of an upload of DICOM instances (headers only, no pixels).

    Raises:
        SeriesError: ``no_images`` (nothing readable), ``mixed_patients``,
            ``unsupported_modality`` (not MR), ``not_sagittal`` (no sagittal series),
            ``inconsistent_geometry``, ``too_few_slices``, or ``too_large``.
    """
    instances, skipped = _read_headers(files)
    if not instances:
        raise SeriesError("no_images", "No readable DICOM image is in the upload.")
    _check_one_patient(instances)
    limits = {"max_pixels": max_pixels, "max_frames": max_frames, "max_decoded": max_decoded_bytes}
    candidates = []
    for group in _group(instances).values():
        modality = _text(group[0].ds, "Modality")
        if modality and modality != "MR":
            continue
        candidates.append(_build(group, skipped, limits))
    if not candidates:
        modalities = sorted({_text(i.ds, "Modality") or "?" for i in instances})
        raise SeriesError(
            "unsupported_modality",
            f"Only MR series can be analysed; this upload is {', '.join(modalities)}.",
        )
    sagittal = [s for s in candidates if s.is_sagittal]
    if not sagittal:
        raise SeriesError(
            "not_sagittal", "No series of the upload is sagittal (the models read sagittal slices)."
        )
    chosen = max(sagittal, key=lambda s: len(s.slices))
    chosen.other_series = [
        {"series_uid": s.series_uid, "slices": len(s.slices), "sagittal": s.is_sagittal}
        for s in candidates
        if s is not chosen
    ]
    if len(chosen.slices) < min_slices:
        raise SeriesError(
            "too_few_slices",
            f"The series has {len(chosen.slices)} usable slices; at least {min_slices} are needed.",
        )
    return chosen


def dicom_slice(files: Sequence[tuple[str, Source]], ref: SliceRef) -> np.ndarray:
    """The pixels of one slice (rescaled to real values; MONOCHROME1 inverted)."""
    import pydicom
    from pydicom.pixels import pixel_array

    from ml.codestream import frame_mismatch

    ds = pydicom.dcmread(_open(files[ref.source][1]))
    try:
        # A compressed frame larger than its header says would be decoded at its own size,
        # which the series' limits never saw: refuse it before decoding.
        problem = frame_mismatch(
            ds,
            ref.frame,
            int(ds.get("NumberOfFrames", 1) or 1),
            int(ds.Rows),
            int(ds.Columns),
            int(ds.get("SamplesPerPixel", 1) or 1),
        )
        arr = None if problem else np.asarray(pixel_array(ds, index=ref.frame), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad pixel data
        raise ImageError(
            "corrupt_image", f"The pixel data of {ref.name} cannot be decoded."
        ) from exc
    if arr is None:
        raise ImageError("corrupt_image", f"{ref.name}: {problem}")
    # The same checked reading as a single image: a slope of "abc" or two values is this
    # slice's corrupt_image, not a failed study.
    slope = dicom_float(ds, "RescaleSlope", 1.0) or 1.0
    arr = arr * slope + dicom_float(ds, "RescaleIntercept", 0.0)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        arr = arr.max() - arr
    return arr.astype(np.float32)


def load_nifti(
    data: bytes,
    *,
    max_pixels: int | None = 40_000_000,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    min_slices: int = MIN_SLICES,
) -> Series:
    """A NIfTI volume as sagittal slices (reoriented to RAS, slices along left-right), each
    shown superior-up and anterior-left like a sagittal DICOM."""
    import nibabel as nib

    raw = nifti_bytes(data, max_decoded_bytes)
    try:
        fh = nib.FileHolder(fileobj=io.BytesIO(raw))
        klass = nib.Nifti2Image if int.from_bytes(raw[:4], "little") == 540 else nib.Nifti1Image
        img = klass.from_file_map({"header": fh, "image": fh})
        vol = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad headers
        raise SeriesError("corrupt_image", "The NIfTI file could not be read.") from exc
    if vol.dtype.kind not in "biuf":
        raise SeriesError(
            "unsupported_format",
            "The NIfTI voxels are not plain numbers (RGB or complex); send a grey-scale volume.",
        )
    if vol.ndim == 4:
        vol = vol[..., 0]
    if vol.ndim != 3:
        raise SeriesError("unsupported_format", f"A volume has 3 dimensions, not {vol.ndim}.")
    ornt = nib.orientations.io_orientation(img.affine)
    ras = nib.orientations.apply_orientation(vol, ornt)
    if max_pixels is not None and ras.shape[1] * ras.shape[2] > max_pixels:
        raise SeriesError("too_large", "The volume's slices have more pixels than the limit.")
    # (x, y, z) RAS -> slices along x, each (S, A) shown superior-up, anterior-left.
    stack = np.stack([np.flipud(np.fliplr(ras[i].T)) for i in range(ras.shape[0])])
    if stack.shape[0] < min_slices:
        raise SeriesError(
            "too_few_slices", f"The volume has {stack.shape[0]} slices; at least {min_slices}."
        )
    zooms = img.header.get_zooms()[:3]
    ras_zooms = [float(zooms[int(axis)]) for axis in ornt[:, 0]]
    # A volume acquired in another plane has its thick axis elsewhere; sagittal slices cut
    # from it would be blurred along one direction the models never saw.
    if max(ras_zooms[1:]) > ANISOTROPY * ras_zooms[0]:
        raise SeriesError(
            "not_sagittal",
            "The volume was not acquired sagittally (its thickest voxel axis is not "
            "left-right); the models read sagittal slices.",
        )
    slices = [SliceRef(0, f"slice {i}", "", None, np.zeros(3), float(i)) for i in range(len(stack))]
    return Series(
        format="nifti",
        rows=int(stack.shape[1]),
        cols=int(stack.shape[2]),
        slices=slices,
        orientation=np.asarray([0.0, 1.0, 0.0, 0.0, 0.0, -1.0]),
        pixel_spacing=(ras_zooms[2], ras_zooms[1]),
        slice_spacing=ras_zooms[0],
        volume=stack.astype(np.float32),
        nifti_affine=np.asarray(img.affine, dtype=np.float64),
        nifti_shape=tuple(int(v) for v in vol.shape),
    )


def mask_to_nifti(series: Series, mask: np.ndarray) -> bytes:
    """A (slices, rows, cols) mask as .nii.gz on the input's own grid and affine."""
    import gzip

    import nibabel as nib

    mask = np.asarray(mask, dtype=np.uint8)
    if series.format == "nifti":
        assert series.nifti_affine is not None and series.nifti_shape is not None
        # Undo the display flips, then the reorientation to RAS.
        ras = np.stack([np.fliplr(np.flipud(m)).T for m in mask])
        ornt = nib.orientations.io_orientation(series.nifti_affine)
        back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), ornt)
        data = nib.orientations.apply_orientation(ras, back)
        img = nib.Nifti1Image(data.astype(np.uint8), series.nifti_affine)
    else:
        # (slice, row, col) -> NIfTI (col, row, slice) with the series' affine.
        img = nib.Nifti1Image(np.transpose(mask, (2, 1, 0)).copy(), series.affine())
    img.header.set_data_dtype(np.uint8)
    img.header["descrip"] = b"spondyscan mask; research use only"
    return gzip.compress(img.to_bytes(), compresslevel=6)
