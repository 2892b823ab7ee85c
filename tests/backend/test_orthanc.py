"""The hospital round trip against a real PACS: Orthanc with its DICOMweb plugin.

A series goes to Orthanc (STOW-RS); spondyscan pulls it (QIDO-RS + WADO-RS), analyses it and
pushes its SEG, SR, parametric maps and captures back (STOW-RS); QIDO finds them in the same
study and the SEG retrieved from Orthanc decodes to spondyscan's own mask. Then Orthanc pushes a
study to spondyscan's STOW-RS endpoint, as a router configured with spondyscan as a DICOMweb
server does.

Orthanc 1.10 listens on every interface (it has no bind-address option), so these tests run only
inside a private network namespace that has nothing but loopback: `make test` runs them under
``unshare -n`` with ``lo`` up. Elsewhere, or without Orthanc installed, they skip with the reason.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from api_helpers import make_settings
from jobs_helpers import DEAD_BROKER
from study_helpers import shipped_models

from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.orthanc

ORTHANC = shutil.which("Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
REAL_SERIES = SHARED_DATA / "studies" / "myosegmentum-01" / "dicom"


def _isolated() -> bool:
    """Inside a network namespace whose only interface is loopback (/proc/net/dev is per
    namespace; /sys/class/net shows the host's unless sysfs is mounted again)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines) == ["lo"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


@dataclass
class Stack:
    orthanc: str  # Orthanc's REST root
    dicomweb: str  # its DICOMweb root
    api: str  # spondyscan's root
    headers: dict[str, str]  # spondyscan credentials (an API key)


def _series_files() -> list[tuple[str, bytes]]:
    if REAL_SERIES.is_dir():
        return [(p.name, p.read_bytes()) for p in sorted(REAL_SERIES.iterdir())]
    from ml.data.synthetic_series import dicom_series, phantom_series

    return dicom_series(phantom_series(24, 160, seed=31), seed=31)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if ORTHANC is None or not PLUGIN.is_file():
        pytest.skip(
            "Orthanc and its DICOMweb plugin are not installed "
            "(make test installs them: apt-get install orthanc orthanc-dicomweb)"
        )
    if not _isolated():
        pytest.skip(
            "Orthanc listens on every interface: these tests run only in a private network "
            "namespace with loopback alone (make test runs them under unshare -n)"
        )
    import uvicorn

    from backend.main import create_app

    tmp = tmp_path_factory.mktemp("orthanc")
    api_port, http_port, dicom_port = _free_port(), _free_port(), _free_port()
    orthanc_url = f"http://127.0.0.1:{http_port}"
    # spondyscan: SQLite, embedded jobs, the shipped segmenter, Orthanc as its DICOMweb server.
    models = shipped_models(tmp / "models")
    settings = make_settings(
        tmp / "api",
        f"sqlite+aiosqlite:///{tmp / 'api.sqlite'}",
        models,
        broker_url=DEAD_BROKER,
        max_upload_bytes=16 * 1024 * 1024,
        dicomweb_url=f"{orthanc_url}/dicom-web",
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=api_port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    api = f"http://127.0.0.1:{api_port}"
    _wait(f"{api}/health/ready", timeout=180)
    with httpx.Client(base_url=api) as http:
        creds = {"email": "pacs@example.org", "password": "pass-word-1"}
        http.post("/auth/signup", json=creds)
        token = http.post(
            "/auth/token", data={"username": creds["email"], "password": creds["password"]}
        ).json()["access_token"]
        key = http.post(
            "/auth/api-keys", json={"name": "orthanc"}, headers={"Authorization": f"Bearer {token}"}
        ).json()["key"]
    # Orthanc, with spondyscan as a DICOMweb server it can push to (the API key as a header).
    config = {
        "Name": "spondyscan-test",
        "StorageDirectory": str(tmp / "orthanc-db"),
        "IndexDirectory": str(tmp / "orthanc-db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "Servers": {
                "spondyscan": {"Url": f"{api}/dicomweb/", "HttpHeaders": {"X-API-Key": key}}
            },
        },
    }
    (tmp / "orthanc.json").write_text(json.dumps(config))
    log = (tmp / "orthanc.log").open("wb")
    proc = subprocess.Popen([ORTHANC, str(tmp / "orthanc.json")], stdout=log, stderr=log)
    try:
        _wait(f"{orthanc_url}/system")
        yield Stack(orthanc_url, f"{orthanc_url}/dicom-web", api, {"X-API-Key": key})
    finally:
        proc.terminate()
        proc.wait(20)
        server.should_exit = True
        thread.join(60)


def _stow(url: str, files: list[tuple[str, bytes]]) -> None:
    from backend.interop import multipart

    body, content_type = multipart.build([data for _, data in files])
    r = httpx.post(f"{url}/studies", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 200, r.text


def _wait_study(stack: Stack, study_id: str, timeout: float = 300) -> dict:
    """The study once finished and, when it pushes its results, once the push is over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = httpx.get(f"{stack.api}/studies/{study_id}", headers=stack.headers).json()
        pushing = (study.get("push") or {}).get("status") == "pending"
        if study["status"] in ("failed", "cancelled") or (
            study["status"] == "done" and not pushing
        ):
            return study
        time.sleep(0.5)
    raise AssertionError(f"study {study_id} did not finish")


def test_pull_analyse_push_round_trip(stack: Stack) -> None:
    import gzip

    import highdicom as hd
    import nibabel as nib
    import pydicom

    from backend.interop import multipart

    files = _series_files()
    first = pydicom.dcmread(io.BytesIO(files[0][1]), stop_before_pixels=True)
    study_uid = str(first.StudyInstanceUID)
    _stow(stack.dicomweb, files)

    # spondyscan pulls the study (QIDO finds the sagittal series, WADO fetches it) and pushes.
    r = httpx.post(
        f"{stack.api}/studies/pull",
        json={"study_uid": study_uid, "push": True, "allow_out_of_domain": True},
        headers=stack.headers,
        timeout=120,
    )
    assert r.status_code == 202, r.text
    study = _wait_study(stack, r.json()["id"])
    assert study["status"] == "done", study
    assert study["push"]["status"] == "done", study["push"]
    assert study["result"]["input"]["slices"] == len(files)

    # QIDO: the SEG, the SR, the parametric maps and the secondary captures (OT) are now in
    # the same study on the PACS.
    series = httpx.get(
        f"{stack.dicomweb}/studies/{study_uid}/series", headers={"Accept": "application/dicom+json"}
    ).json()
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert {"SEG", "SR", "OT"} <= set(modalities) and len(series) >= 5, modalities

    # The SEG retrieved from the PACS decodes to spondyscan's own mask.
    seg_series = next(s for s in series if s["00080060"]["Value"][0] == "SEG")
    uid = seg_series["0020000E"]["Value"][0]
    r = httpx.get(
        f"{stack.dicomweb}/studies/{study_uid}/series/{uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert r.status_code == 200
    (payload,) = [
        p for _, p in multipart.split(r.content, multipart.boundary_of(r.headers["content-type"]))
    ]
    seg = hd.seg.segread(io.BytesIO(payload))
    mask_r = httpx.get(f"{stack.api}/studies/{study['id']}/mask.nii.gz", headers=stack.headers)
    img = nib.Nifti1Image.from_bytes(gzip.decompress(mask_r.content))
    mask = np.transpose(np.asarray(img.dataobj) > 0, (2, 1, 0))
    by_uid = {s["sop_instance_uid"]: s["index"] for s in study["result"]["slices"]}
    referenced = [u for u, i in by_uid.items() if mask[i].any()]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=referenced, segment_numbers=[1]
    )
    for u, frame in zip(referenced, pixels[..., 0], strict=True):
        assert np.array_equal(frame > 0, mask[by_uid[u]]), u


def test_orthanc_pushes_a_study_to_spondyscan(stack: Stack) -> None:
    from ml.data.synthetic_series import dicom_series, phantom_series

    files = dicom_series(phantom_series(12, 96, seed=32), seed=32)
    _stow(stack.dicomweb, files)
    import pydicom

    study_uid = pydicom.dcmread(io.BytesIO(files[0][1]), stop_before_pixels=True).StudyInstanceUID
    found = httpx.post(
        f"{stack.orthanc}/tools/find",
        json={"Level": "Study", "Query": {"StudyInstanceUID": study_uid}},
    ).json()
    assert len(found) == 1
    # Orthanc's DICOMweb client sends the study to spondyscan's STOW-RS endpoint.
    r = httpx.post(
        f"{stack.orthanc}/dicom-web/servers/spondyscan/stow",
        json={"Resources": found, "Synchronous": True},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    listed = httpx.get(f"{stack.api}/studies", headers=stack.headers).json()["items"]
    newest = listed[0]
    study = _wait_study(stack, newest["id"])
    assert study["status"] == "done" and study["result"]["input"]["slices"] == 12
    assert study["result"]["input"]["series_uid"] == str(
        pydicom.dcmread(io.BytesIO(files[0][1]), stop_before_pixels=True).SeriesInstanceUID
    )


def test_pull_of_an_unknown_study_is_404(stack: Stack) -> None:
    r = httpx.post(
        f"{stack.api}/studies/pull", json={"study_uid": "1.2.3.4.5.6.7"}, headers=stack.headers
    )
    assert r.status_code == 404 and r.json()["code"] == "remote_study_not_found", r.text
