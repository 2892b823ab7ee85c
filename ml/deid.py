"""De-identification of DICOM instances: the PS3.15 Annex E basic profile, retaining UIDs.

Used when a deployment sets ``deidentify``: uploaded instances are rewritten as they arrive, so
no name, ID, date or free text of the patient is stored anywhere. UIDs are kept (the "Retain
UIDs" option, DCM 113110) because the results refer to the source instances by them. The
patient ID becomes a keyed pseudonym, so studies of one patient still group together within one
deployment without the ID being recoverable.

Actions follow PS3.15 Table E.1-1: ``X`` remove, ``Z`` replace with an empty value, ``D``
replace with a dummy value. Private tags, curves and overlays are removed too.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from typing import Any

# Attributes replaced with an empty value (type 2 in the IODs we keep, so they must stay).
EMPTY = (
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "ContentCreatorName",
)
# Attributes removed (identifying, or free text that may name the patient).
REMOVE = (
    "AcquisitionDate",
    "AcquisitionDateTime",
    "AcquisitionTime",
    "AdditionalPatientHistory",
    "AdmittingDiagnosesDescription",
    "Allergies",
    "BranchOfService",
    "ContentDate",
    "ContentTime",
    "CountryOfResidence",
    "CurrentPatientLocation",
    "DerivationDescription",
    "DeviceSerialNumber",
    "EthnicGroup",
    "ImageComments",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "InstitutionAddress",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "IssuerOfPatientID",
    "MedicalAlerts",
    "MedicalRecordLocator",
    "MilitaryRank",
    "NameOfPhysiciansReadingStudy",
    "Occupation",
    "OperatorsName",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientAddress",
    "PatientAge",
    "PatientBirthName",
    "PatientBirthTime",
    "PatientComments",
    "PatientInsurancePlanCodeSequence",
    "PatientMotherBirthName",
    "PatientReligiousPreference",
    "PatientSize",
    "PatientTelephoneNumbers",
    "PatientWeight",
    "PerformedProcedureStepDescription",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformingPhysicianName",
    "PhysiciansOfRecord",
    "PregnancyStatus",
    "ReferencedPatientSequence",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "RequestAttributesSequence",
    "RequestingPhysician",
    "ScheduledProcedureStepDescription",
    "SeriesDate",
    "SeriesTime",
    "SmokingStatus",
    "StationName",
    "StudyComments",
    "StudyDescription",
    "AdmissionID",
    "PatientState",
    "ProtocolName",
)
METHOD = "DICOM PS3.15 E.1 basic profile; retain UIDs"
METHOD_CODES = (("113100", "Basic Application Confidentiality Profile"), ("113110", "Retain UIDs"))


def pseudonym(patient_id: str, key: bytes) -> str:
    """A stable stand-in for a patient ID: keyed, so it cannot be reversed by guessing IDs."""
    digest = hmac.new(key, patient_id.encode("utf-8", "replace"), hashlib.sha256).hexdigest()
    return f"ANON-{digest[:16].upper()}"


def deidentify_dataset(ds: Any, key: bytes) -> Any:
    """Apply the basic profile to a pydicom Dataset in place (and return it)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    original_id = str(ds.get("PatientID", "") or "")
    ds.remove_private_tags()
    for keyword in REMOVE:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in EMPTY:
        if keyword in ds:
            setattr(ds, keyword, "")
    # Curves (50xx) and overlays (60xx) may burn in text.
    for elem in list(ds):
        group = elem.tag.group
        if 0x5000 <= group <= 0x50FF or (0x6000 <= group <= 0x60FF):
            del ds[elem.tag]
    ds.PatientID = pseudonym(original_id, key) if original_id else ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    codes = []
    for value, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    return ds


def deidentify_bytes(data: bytes, key: bytes) -> bytes:
    """One DICOM file, de-identified; raises what pydicom raises for unreadable input."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    deidentify_dataset(ds, key)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
