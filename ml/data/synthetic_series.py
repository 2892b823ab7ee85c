"""Synthetic whole series: a phantom subject sliced sagittally, written as a DICOM series (one
instance per slice, or one Enhanced MR multi-frame instance) or a NIfTI volume.

Tests, the benchmark and the docs use these where the real studies (``../shared``) are absent.
Slices near the midline show the lumbar column (:func:`ml.data.synthetic.make_phantom` with its
``lateral`` offset); the outermost slices show soft tissue only, as a real series does.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ml.data.synthetic import make_phantom, sample_params

# Sagittal: along a row anterior->posterior (+y), down a column superior->inferior (-z); slices
# step along x (right->left in LPS).
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass
class PhantomSeries:
    """A (slices, rows, cols) uint16 volume, its vertebra mask, and its geometry."""

    volume: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # (slice, row, col) mm
    patient: dict[str, str] = field(
        default_factory=lambda: {
            "PatientName": "DOE^JANE",
            "PatientID": "PAT-0001",
            "PatientBirthDate": "19700101",
            "PatientSex": "F",
        }
    )


def phantom_series(n_slices: int = 24, size: int = 128, seed: int = 0) -> PhantomSeries:
    """One synthetic subject, ``n_slices`` sagittal slices of ``size`` pixels."""
    rng = np.random.default_rng(seed)
    params = sample_params(rng)
    vol = np.zeros((n_slices, size, size), dtype=np.float32)
    mask = np.zeros((n_slices, size, size), dtype=np.uint8)
    half = max((n_slices - 1) / 2.0, 1.0)
    for k in range(n_slices):
        lateral = (k - half) / half * 1.6
        ph = make_phantom(
            seed * 1000 + k, size, params=params, lateral=float(np.clip(lateral, -1, 1))
        )
        if abs(lateral) <= 1.0:
            vol[k], mask[k] = ph.image, ph.mask
        else:
            # Beyond the column: the soft tissue of the same slice, bone and discs blurred away.
            vol[k] = cv2.GaussianBlur(ph.image, (0, 0), 6.0) * 0.6
    return PhantomSeries(np.rint(np.clip(vol, 0, 1) * 4000).astype(np.uint16), mask)


def _uid(rng: np.random.Generator) -> str:
    return "2.25." + str(int(rng.integers(1, 2**62)) * 2**40 + int(rng.integers(1, 2**40)))


def _base(ds: Any, s: PhantomSeries, uids: dict[str, str], modality: str) -> None:
    from pydicom.uid import MRImageStorage

    d = ds
    d.SOPClassUID = MRImageStorage if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2"
    d.Modality = modality
    for key, value in s.patient.items():
        setattr(d, key, value)
    d.StudyInstanceUID = uids["study"]
    d.SeriesInstanceUID = uids["series"]
    d.FrameOfReferenceUID = uids["frame"]
    d.StudyDate, d.StudyTime, d.AccessionNumber = "20260101", "120000", "ACC1"
    d.StudyID, d.SeriesNumber, d.ReferringPhysicianName = "1", 1, ""
    d.SeriesDescription = "T2 SAG"
    d.Rows, d.Columns = s.volume.shape[1:]
    d.SamplesPerPixel = 1
    d.PhotometricInterpretation = "MONOCHROME2"
    d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation = 16, 12, 11, 0


def _dataset(sop_uid: str, sop_class: str, transfer_syntax: str) -> Any:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPInstanceUID = sop_uid
    return ds


def _save(ds: Any, compressed: bool) -> bytes:
    from pydicom.uid import RLELossless

    if compressed:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_series(
    s: PhantomSeries,
    *,
    seed: int = 0,
    modality: str = "MR",
    orientation: tuple[float, ...] = SAGITTAL_IOP,
    compressed: bool = False,
    uids: dict[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    """One instance per slice, named in a shuffled order (the order must come from geometry)."""
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    rng = np.random.default_rng(seed)
    uids = uids or {"study": _uid(rng), "series": _uid(rng), "frame": _uid(rng)}
    normal = np.cross(orientation[:3], orientation[3:])
    order = rng.permutation(len(s.volume))
    files = []
    for name_index, k in enumerate(order):
        sop = _uid(rng)
        ds = _dataset(sop, MRImageStorage, ExplicitVRLittleEndian)
        _base(ds, s, uids, modality)
        position = np.array([-20.0, -60.0, 60.0]) + normal * s.spacing[0] * float(k)
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = [s.spacing[1], s.spacing[2]]
        ds.SliceThickness = s.spacing[0]
        # Instance numbers deliberately disagree with the geometry.
        ds.InstanceNumber = int(name_index) + 1
        ds.PixelData = s.volume[k].tobytes()
        files.append((f"IM{name_index:04d}.dcm", _save(ds, compressed)))
    return files


def enhanced_mr(s: PhantomSeries, *, seed: int = 0) -> bytes:
    """The series as one Enhanced MR Image Storage instance, frames in reverse order."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian

    rng = np.random.default_rng(seed)
    uids = {"study": _uid(rng), "series": _uid(rng), "frame": _uid(rng)}
    ds = _dataset(_uid(rng), EnhancedMRImageStorage, ExplicitVRLittleEndian)
    _base(ds, s, uids, "MR")
    ds.SOPClassUID = EnhancedMRImageStorage
    n = len(s.volume)
    ds.NumberOfFrames = n
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [s.spacing[1], s.spacing[2]]
    measures.SliceThickness = s.spacing[0]
    shared.PixelMeasuresSequence = Sequence([measures])
    orient = Dataset()
    orient.ImageOrientationPatient = list(SAGITTAL_IOP)
    shared.PlaneOrientationSequence = Sequence([orient])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    order = list(range(n))[::-1]
    for k in order:
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [-20.0 - s.spacing[0] * k, -60.0, 60.0]
        item.PlanePositionSequence = Sequence([pos])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.ascontiguousarray(s.volume[order]).tobytes()
    return _save(ds, compressed=False)


def nifti_volume(s: PhantomSeries) -> bytes:
    """The series as a gzipped NIfTI-1 volume in LPS-like DICOM order, with its affine."""
    import nibabel as nib

    # Voxel (i=col, j=row, k=slice): col -> -z (inferior), row -> +y (posterior), slice -> +x.
    data = np.transpose(s.volume, (2, 1, 0)).astype(np.int16)
    lps = np.eye(4)
    lps[:3, 0] = np.array(SAGITTAL_IOP[:3]) * s.spacing[2]
    lps[:3, 1] = np.array(SAGITTAL_IOP[3:]) * s.spacing[1]
    lps[:3, 2] = np.cross(SAGITTAL_IOP[:3], SAGITTAL_IOP[3:]) * s.spacing[0]
    lps[:3, 3] = [-20.0, -60.0, 60.0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    img = nib.Nifti1Image(data, affine)
    return gzip.compress(img.to_bytes(), compresslevel=1)
