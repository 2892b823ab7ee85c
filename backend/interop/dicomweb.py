"""A small DICOMweb client (httpx): QIDO-RS to find series, WADO-RS to fetch a series'
instances and metadata, STOW-RS to store objects. Tested against Orthanc's DICOMweb plugin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from backend.interop import multipart

DICOM_JSON = "application/dicom+json"
# Whole instances in their stored transfer syntax (Orthanc refuses */* for instances).
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class DicomwebError(Exception):
    """The DICOMweb server refused or could not be reached (``code`` says which)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _value(item: dict[str, Any], tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


@dataclass
class RemoteSeries:
    uid: str
    modality: str | None
    instances: int
    description: str | None


class DicomwebClient:
    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        auth = httpx.BasicAuth(username, password or "") if username else None
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(auth=auth, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _get(self, path: str, accept: str, **params: Any) -> httpx.Response:
        try:
            r = await self.http.get(self.url + path, headers={"Accept": accept}, params=params)
        except httpx.HTTPError as exc:
            raise DicomwebError("dicomweb_unreachable", f"{self.url}: {exc}") from exc
        if r.status_code == 404 or (r.status_code == 204 and accept == DICOM_JSON):
            raise DicomwebError("remote_not_found", f"{self.url}{path}: not found")
        if r.status_code >= 400:
            raise DicomwebError("dicomweb_error", f"{self.url}{path}: HTTP {r.status_code}")
        return r

    async def series(self, study_uid: str) -> list[RemoteSeries]:
        """QIDO-RS: the series of a study."""
        r = await self._get(f"/studies/{study_uid}/series", DICOM_JSON)
        if r.status_code == 204 or not r.content:
            return []
        return [
            RemoteSeries(
                uid=_value(item, "0020000E"),
                modality=_value(item, "00080060"),
                instances=int(_value(item, "00201209") or 0),
                description=_value(item, "0008103E"),
            )
            for item in r.json()
        ]

    async def orientation(self, study_uid: str, series_uid: str) -> list[float] | None:
        """WADO-RS metadata: the ImageOrientationPatient of the series' first instance."""
        r = await self._get(f"/studies/{study_uid}/series/{series_uid}/metadata", DICOM_JSON)
        for item in r.json():
            iop = (item.get("00200037") or {}).get("Value")
            if iop:
                return [float(v) for v in iop]
            shared = _value(item, "52009229") or {}
            plane = _value(shared, "00209116") or {}
            iop = (plane.get("00200037") or {}).get("Value")
            if iop:
                return [float(v) for v in iop]
        return None

    async def retrieve_series(self, study_uid: str, series_uid: str) -> list[bytes]:
        """WADO-RS: every instance of a series (Part 10 bytes)."""
        r = await self._get(f"/studies/{study_uid}/series/{series_uid}", WADO_ACCEPT)
        boundary = multipart.boundary_of(r.headers.get("content-type", ""))
        return [payload for _, payload in multipart.split(r.content, boundary)]

    async def store(self, objects: list[bytes]) -> dict[str, Any]:
        """STOW-RS: store these instances; the server's response (DICOM JSON)."""
        body, content_type = multipart.build(objects)
        try:
            r = await self.http.post(
                self.url + "/studies",
                content=body,
                headers={"Content-Type": content_type, "Accept": DICOM_JSON},
            )
        except httpx.HTTPError as exc:
            raise DicomwebError("dicomweb_unreachable", f"{self.url}: {exc}") from exc
        if r.status_code >= 400:
            raise DicomwebError("dicomweb_error", f"STOW-RS to {self.url}: HTTP {r.status_code}")
        return dict(r.json()) if r.content else {}


def is_sagittal(orientation: list[float] | None) -> bool:
    from ml.series import SAGITTAL_COSINE

    if not orientation or len(orientation) != 6:
        return False
    normal = np.cross(orientation[:3], orientation[3:])
    return abs(float(normal[0])) >= SAGITTAL_COSINE
