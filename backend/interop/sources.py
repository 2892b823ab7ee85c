"""The source instances' headers an output object must reference, kept with a result.

Uploaded instances are deleted once a study is stored, but a DICOM SEG, SR or parametric map
built later must reference them (UIDs, geometry, patient and study modules). So the headers of
the instances analysed are kept beside the result (``sources.zip``), reduced to the attributes
on this list: no pixel data, no other identifying or free-text attribute of the original.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SOURCES_FILE = "sources.zip"
KEEP = (
    # Patient and general study (the output objects copy them)
    "SpecificCharacterSet",  # how the names below are encoded
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientIdentityRemoved",
    "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
    "ReferringPhysicianName", "StudyDescription",
    # Series, frame of reference, equipment
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "BodyPartExamined",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "Manufacturer",
    # The image: identity, geometry, pixel description (no pixels)
    "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "ImageType", "ContentDate", "ContentTime",
    "PatientOrientation",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "SpacingBetweenSlices", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "NumberOfFrames",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
    "DimensionOrganizationSequence", "DimensionIndexSequence", "LossyImageCompression",
)  # fmt: skip


def reduced_header(source: bytes | Path) -> Any:
    """One instance's header with only the attributes on ``KEEP`` (and its file meta)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source,
                         stop_before_pixels=True)  # fmt: skip
    out = Dataset()
    for keyword in KEEP:
        if keyword in ds:
            out[keyword] = ds[keyword]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    out.file_meta = meta
    return out


def pack_sources(paths: Sequence[tuple[str, bytes | Path]]) -> bytes:
    """The reduced headers of these instances as one zip (``0000.dcm``... in the given order)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for index, (_, source) in enumerate(paths):
            ds = reduced_header(source)
            one = io.BytesIO()
            ds.save_as(one, enforce_file_format=True)
            zf.writestr(f"{index:04d}.dcm", one.getvalue())
    return buf.getvalue()


def unpack_sources(data: bytes) -> list[Any]:
    """The headers of a ``sources.zip``, in their stored order."""
    import pydicom

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".dcm"))
        return [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in names]
