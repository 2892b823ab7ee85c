"""Results as a FHIR R4 report: a Bundle with a DiagnosticReport (status ``preliminary``, a
conclusion that says research use), one Observation per model and head (AS status, stage,
P(AS positive), each with its model, version and label provenance), the Device that made them,
and, for DICOM inputs, the ImagingStudy and its Patient.

Built and validated with ``fhir.resources``' R4B models (their field names for these resources
are R4's; the package's default models are R5).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from backend.interop.dicom_out import NOTICE, SCHEME_NAME, ModelAnswer

# A local code system (no public terminology has research AS labels from feature rules).
CODE_SYSTEM = "urn:spondyscan:codesystem:as-research-labels"
CONCLUSION = (
    "Research use only, not for diagnostic use: AS status and stage are outputs of models trained "
    "on labels computed from image-feature rules, not on radiologists' readings."
)


@dataclass
class FhirInput:
    result_id: uuid.UUID
    issued: str  # ISO 8601 date-time with zone
    answers: list[ModelAnswer]
    study_uid: str | None = None
    series_uid: str | None = None
    instances: int = 0
    patient: dict[str, str] = field(default_factory=dict)
    software_version: str = "0"
    result_url: str = ""


def _urn(result_id: uuid.UUID, what: str) -> str:
    return f"urn:uuid:{uuid.uuid5(result_id, what)}"


def _coding(code: str, display: str) -> dict[str, Any]:
    return {"system": CODE_SYSTEM, "code": code, "display": display}


def _observations(inp: FhirInput, subject: dict | None, device: str, study: str | None) -> list:
    out = []
    for a in inp.answers:
        note = (
            f"Model {a.key} {a.version} ({a.display_name}); labels: {a.label_source} "
            f"({SCHEME_NAME}); {NOTICE}."
        )
        common: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "preliminary",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "imaging",
                            "display": "Imaging",
                        }
                    ]
                }
            ],
            "issued": inp.issued,
            "device": {"reference": device},
            "note": [{"text": note}],
            **({"subject": subject} if subject else {}),
            **({"derivedFrom": [{"reference": study}]} if study else {}),
        }
        status = {
            **common,
            "code": {"coding": [_coding("as-status", "AS status (research label)")]},
            "valueCodeableConcept": {
                "coding": [_coding(f"as-{a.as_status}", f"AS {a.as_status} (research label)")]
            },
        }
        if a.p_positive is not None:
            status["component"] = [
                {
                    "code": {"coding": [_coding("p-as-positive", "Probability of AS positive")]},
                    "valueQuantity": {
                        "value": round(float(a.p_positive), 4),
                        "unit": "1",
                        "system": "http://unitsofmeasure.org",
                        "code": "1",
                    },
                }
            ]
        stage = {
            **common,
            "code": {"coding": [_coding("as-stage", "AS stage (research label)")]},
            "valueCodeableConcept": {
                "coding": [_coding(f"stage-{a.stage.lower()}", f"{a.stage} (research label)")]
            },
        }
        out.append((_urn(inp.result_id, f"obs-status-{a.key}"), status))
        out.append((_urn(inp.result_id, f"obs-stage-{a.key}"), stage))
    return out


def build_bundle(inp: FhirInput) -> dict[str, Any]:
    """The report as a FHIR R4 ``collection`` Bundle (a dict, validated with R4B models)."""
    from fhir.resources.R4B.bundle import Bundle

    device_ref = _urn(inp.result_id, "device")
    entries: list[tuple[str, dict[str, Any]]] = [
        (
            device_ref,
            {
                "resourceType": "Device",
                "manufacturer": "spondyscan",
                "deviceName": [{"name": "spondyscan", "type": "manufacturer-name"}],
                "version": [{"value": inp.software_version}],
                "note": [{"text": f"AS research models; {NOTICE}."}],
            },
        )
    ]
    subject = study_ref = None
    if inp.study_uid:
        patient_ref = _urn(inp.result_id, "patient")
        patient: dict[str, Any] = {"resourceType": "Patient"}
        if inp.patient.get("PatientID"):
            patient["identifier"] = [{"value": inp.patient["PatientID"]}]
        entries.append((patient_ref, patient))
        subject = {"reference": patient_ref}
        study_ref = _urn(inp.result_id, "imaging-study")
        imaging: dict[str, Any] = {
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": subject,
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{inp.study_uid}"}],
            "numberOfInstances": inp.instances or None,
        }
        if inp.series_uid:
            imaging["series"] = [
                {
                    "uid": inp.series_uid,
                    "modality": {
                        "system": "http://dicom.nema.org/resources/ontology/DCM",
                        "code": "MR",
                    },
                    "numberOfInstances": inp.instances or None,
                }
            ]
        entries.append((study_ref, {k: v for k, v in imaging.items() if v is not None}))
    observations = _observations(inp, subject, device_ref, study_ref)
    entries += observations
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                        "code": "RAD",
                        "display": "Radiology",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "18748-4"}],
            "text": "Diagnostic imaging study (AS research models)",
        },
        "issued": inp.issued,
        "result": [{"reference": ref} for ref, _ in observations],
        "conclusion": CONCLUSION,
        **({"subject": subject} if subject else {}),
        **({"imagingStudy": [{"reference": study_ref}]} if study_ref else {}),
    }
    entries.insert(0, (_urn(inp.result_id, "report"), report))
    bundle = {
        "resourceType": "Bundle",
        "id": str(inp.result_id),
        "type": "collection",
        "timestamp": inp.issued,
        "entry": [{"fullUrl": ref, "resource": res} for ref, res in entries],
    }
    # Validates every resource against the R4B models (raises on a wrong field or type).
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True)
