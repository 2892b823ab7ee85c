"""`spondyscan dicom-listen`: a real DIMSE association on loopback (pynetdicom as the modality)
sends a series by C-STORE; the listener spools it, and once it is stable sends it by STOW-RS to
the app, which analyses it as a study. Refusals keep the series; an absent server loses nothing."""

from __future__ import annotations

import copy
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from study_helpers import StudyEnv, wait_study

from backend.client.listener import (
    CANNOT_UNDERSTAND,
    FAILED,
    INCOMING,
    OUT_OF_RESOURCES,
    DicomListener,
)
from backend.client.session import SpondyscanClient
from ml.data.synthetic_series import dicom_series, phantom_series

# Timing-sensitive (windows, waits, processes started or killed): `make test` runs it alone.
pytestmark = pytest.mark.serial


@pytest.fixture(scope="module")
def series() -> Any:
    return phantom_series(12, 128, seed=41)


@pytest.fixture
def listener(tmp_path: Path) -> Any:
    lst = DicomListener(tmp_path / "spool", stable_seconds=0.5)
    port = lst.start("127.0.0.1", 0)
    yield lst, port
    lst.stop()


def _send(port: int, datasets: list[pydicom.Dataset]) -> list[int]:
    """C-ECHO, then C-STORE each dataset over one association; the statuses."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title="SPONDYSCAN")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _client(env: StudyEnv) -> SpondyscanClient:
    token = env.alice["Authorization"].removeprefix("Bearer ")
    return SpondyscanClient(
        "http://test", token=token, transport=httpx.ASGITransport(app=env.app), max_retries=0
    )


def _datasets(series: Any, seed: int) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(data)) for _, data in dicom_series(series, seed=seed)]


async def test_c_store_series_becomes_a_study(senv: StudyEnv, series: Any, listener: Any) -> None:
    lst, port = listener
    datasets = _datasets(series, seed=41)
    assert _send(port, datasets) == [0x0000] * len(datasets)
    assert lst.received == len(datasets)
    # Not stable yet: nothing is sent while instances may still be arriving.
    async with _client(senv) as client:
        assert await lst.forward_ready(client, now=0.0) == []
        (sent,) = await lst.forward_ready(client, now=1e12)
    assert sent.error is None and sent.instances == len(datasets) and sent.refused_instances == 0
    study = await wait_study(senv.client, str(sent.study_id), senv.alice)
    assert study["status"] == "done", study
    assert study["result"]["input"]["slices"] == len(datasets)
    uids = {s["sop_instance_uid"] for s in study["result"]["slices"]}
    assert uids == {str(ds.SOPInstanceUID) for ds in datasets}
    # The spool is emptied and the forwarding recorded.
    assert not any((lst.spool / INCOMING).iterdir())
    (line,) = (lst.spool / "forwarded.jsonl").read_text().splitlines()
    assert json.loads(line)["study_id"] == sent.study_id


async def test_refusals_keep_the_series_and_an_absent_server_loses_nothing(
    senv: StudyEnv, series: Any, listener: Any
) -> None:
    lst, port = listener
    datasets = _datasets(series, seed=42)
    broken = copy.deepcopy(datasets[0])
    del broken.SeriesInstanceUID
    assert _send(port, [broken, *datasets[:4]]) == [CANNOT_UNDERSTAND] + [0x0000] * 4
    assert lst.refused == 1

    # The server cannot be reached: the series stays spooled for the next round.
    async with SpondyscanClient("http://127.0.0.1:9", token="x", max_retries=0) as away:
        assert await lst.forward_ready(away, now=1e12) == []
    assert len(list((lst.spool / "sending").iterdir())) == 1

    # The listener's own credential is refused (a key revoked, a token expired): the series is
    # kept for when it works again, not set aside.
    bad = SpondyscanClient(
        "http://test", api_key="not-a-key", transport=httpx.ASGITransport(app=senv.app)
    )
    async with bad:
        assert await lst.forward_ready(bad, now=1e12) == []
    assert not any((lst.spool / FAILED).iterdir())
    (waiting,) = (lst.spool / "sending").iterdir()
    assert len(list(waiting.glob("*.dcm"))) == 4
    async with _client(senv) as client:
        (sent,) = await lst.forward_ready(client, now=1e12)
    assert sent.study_id is not None and sent.instances == 4
    assert not any((lst.spool / "sending").iterdir())
    await wait_study(senv.client, sent.study_id, senv.alice)


class _AnswerLost(httpx.AsyncBaseTransport):
    """The app stores the STOW-RS request, then the answer is lost on the way back."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if request.method == "POST" and request.url.path.endswith("/dicomweb/studies"):
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


async def _studies(env: StudyEnv) -> list[str]:
    r = await env.client.get("/studies", headers=env.alice, params={"limit": 100})
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


async def test_a_series_whose_answer_was_lost_gets_the_same_study(
    senv: StudyEnv, series: Any, listener: Any
) -> None:
    lst, port = listener
    datasets = _datasets(series, seed=44)
    assert _send(port, datasets) == [0x0000] * len(datasets)
    before = set(await _studies(senv))
    token = senv.alice["Authorization"].removeprefix("Bearer ")
    lost = SpondyscanClient("http://test", token=token, transport=_AnswerLost(senv.app))
    async with lost:
        assert await lst.forward_ready(lost, now=1e12) == []
    (stored,) = set(await _studies(senv)) - before  # the server stored it once
    assert len(list((lst.spool / "sending").iterdir())) == 1  # the listener cannot know: kept
    async with _client(senv) as client:
        (sent,) = await lst.forward_ready(client, now=1e12)
    assert sent.study_id == stored and sent.instances == len(datasets)
    assert set(await _studies(senv)) - before == {stored}  # not analysed twice
    assert not any((lst.spool / "sending").iterdir())
    await wait_study(senv.client, stored, senv.alice)


async def test_instances_the_server_refuses_are_kept_with_the_reason(
    senv: StudyEnv, series: Any, listener: Any
) -> None:
    lst, port = listener
    datasets = _datasets(series, seed=44)[:5]
    cut = copy.deepcopy(datasets[0])
    cut.SOPInstanceUID = pydicom.uid.generate_uid()
    cut.PixelData = cut.PixelData[: len(cut.PixelData) // 2]  # a truncated image
    assert _send(port, [*datasets, cut]) == [0x0000] * 6
    async with _client(senv) as client:
        (sent,) = await lst.forward_ready(client, now=1e12)
    assert sent.study_id is not None and sent.refused_instances == 1
    (kept,) = (lst.spool / FAILED).iterdir()
    assert [p.name for p in kept.glob("*.dcm")] == [f"{cut.SOPInstanceUID}.dcm"]
    error = json.loads((kept / "error.json").read_text())
    assert error["status"] == 202
    assert error["instances"] == [
        {"sop_instance_uid": str(cut.SOPInstanceUID), "failure_reason": 0x0110}  # processing
    ]
    assert not any((lst.spool / "sending").iterdir())
    await wait_study(senv.client, sent.study_id, senv.alice)


async def test_an_unexpected_answer_is_retried_then_set_aside(series: Any, listener: Any) -> None:
    # A proxy in front of the server answers with a web page: the listener keeps running, tries
    # again next round, and after its attempts sets the series aside with what happened.
    lst, port = listener
    lst.max_attempts = 2
    assert _send(port, _datasets(series, seed=45)[:3]) == [0x0000] * 3

    def page(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>Sign in to the proxy</html>")

    proxy = SpondyscanClient(
        "http://test", token="x", transport=httpx.MockTransport(page), max_retries=0
    )
    async with proxy:
        assert await lst.forward_ready(proxy, now=1e12) == []
        assert len(list((lst.spool / "sending").iterdir())) == 1
        (aside,) = await lst.forward_ready(proxy, now=1e12)
    assert aside.error is not None and aside.error["code"] == "forward_error"
    (kept,) = (lst.spool / FAILED).iterdir()
    assert len(list(kept.glob("*.dcm"))) == 3
    assert json.loads((kept / "error.json").read_text())["code"] == "forward_error"


def test_a_series_is_not_sent_while_its_association_is_open(series: Any, listener: Any) -> None:
    from pynetdicom import AE

    lst, port = listener
    datasets = _datasets(series, seed=46)[:2]
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(str(datasets[0].SOPClassUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="SPONDYSCAN")
    assert assoc.is_established
    try:
        assert int(assoc.send_c_store(datasets[0]).Status) == 0x0000
        assert lst.stable_series(now=1e12) == []  # still receiving, however long ago
    finally:
        assoc.release()
    deadline = time.monotonic() + 10
    while not (ready := lst.stable_series(now=1e12)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the close is seen by the server's thread
    assert len(ready) == 1 and len(list(ready[0].glob("*.dcm"))) == 1


def test_only_the_allowed_callers_may_send(tmp_path: Path) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    lst = DicomListener(tmp_path / "spool", allowed_aets=("SCANNER1",))
    port = lst.start("127.0.0.1", 0)
    try:
        for caller, allowed in (("SCANNER1", True), ("STRANGER", False)):
            ae = AE(ae_title=caller)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", port, ae_title="SPONDYSCAN")
            assert assoc.is_established == allowed, caller
            if allowed:
                assoc.release()
    finally:
        lst.stop()


def test_a_series_past_its_size_limit_is_refused_not_spooled(series: Any, listener: Any) -> None:
    lst, port = listener
    datasets = _datasets(series, seed=43)[:3]
    one = len(pydicom.dcmread(io.BytesIO(dicom_series(series, seed=43)[0][1])).PixelData)
    lst.max_series_bytes = int(one * 1.5)  # room for one instance, not two
    assert _send(port, datasets) == [0x0000, OUT_OF_RESOURCES, OUT_OF_RESOURCES]
    (folder,) = (lst.spool / INCOMING).iterdir()
    assert len(list(folder.glob("*.dcm"))) == 1 and lst.refused == 2
    # The instance sent again replaces its copy: it is not counted twice.
    assert _send(port, datasets[:1]) == [0x0000]
    assert len(list(folder.glob("*.dcm"))) == 1 and lst.refused == 2


def test_the_command_needs_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.cli import main

    monkeypatch.delenv("SPONDYSCAN_API_KEY", raising=False)
    assert main(["dicom-listen", "--port", "0"]) == 2
    assert "--api-key" in capsys.readouterr().err
