"""Results in hospital formats: DICOM SEG, SR and parametric maps, and FHIR R4 bundles, for a
stored analysis of a DICOM slice (``/analyses/{id}/...``) or a study (``/studies/{id}/...``)."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Response

from backend.api.deps import CurrentUser, RuntimeDep, SessionDep
from backend.schemas.common import error_responses
from backend.services import exports as exports_service

router = APIRouter(tags=["exports"])

Which = Literal["dicom", "seg", "sr", "fhir"]
_PATHS: dict[str, Which] = {"dicom": "dicom", "seg.dcm": "seg", "sr.dcm": "sr", "fhir": "fhir"}
_RESPONSES = {
    200: {
        "content": {
            "application/zip": {},
            "application/dicom": {},
            "application/fhir+json": {},
        },
        "description": "dicom: a zip of SEG, SR, parametric maps and secondary captures; "
        "seg.dcm, sr.dcm: one object; fhir: a FHIR R4 Bundle",
    },
    **error_responses(401, 404, 409, 422),
}


def _reply(out: exports_service.Exported) -> Response:
    return Response(
        out.body,
        media_type=out.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{out.filename}"',
            "Cache-Control": "private, no-store",
        },
    )


def _endpoint(which: Which, study: bool, doc: str):  # noqa: ANN202 - a route function
    async def export(
        result_id: uuid.UUID, principal: CurrentUser, session: SessionDep, runtime: RuntimeDep
    ) -> Response:
        out = await exports_service.export(
            session, runtime.store, principal, result_id, which, study=study
        )
        return _reply(out)

    export.__doc__ = doc
    return export


for _prefix, _study in (("/studies", True), ("/analyses", False)):
    _noun = "study" if _study else "analysis (of a DICOM slice, for the DICOM objects)"
    for _path, _which in _PATHS.items():
        router.add_api_route(
            f"{_prefix}/{{result_id}}/{_path}",
            _endpoint(_which, _study, f"The {_noun} as {_path}."),
            methods=["GET"],
            response_class=Response,
            responses=_RESPONSES,
            summary=f"{'Study' if _study else 'Analysis'} as {_path}",
            operation_id=f"export_{'study' if _study else 'analysis'}_{_which}",
        )
