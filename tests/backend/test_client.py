"""The batch client against a real server over HTTP: resume after an interruption uploads only
what is missing, 503 Retry-After is honoured, and the job methods work."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import api_samples as samples
import httpx
import pytest
from api_helpers import make_settings
from jobs_helpers import DEAD_BROKER

from backend.cli import main as spondyscan
from backend.client import ClientError, FileResult, SpondyscanClient, analyze_folder

# Timing-sensitive (windows, waits, processes started or killed): `make test` runs it alone.
pytestmark = pytest.mark.serial


@dataclass
class Server:
    url: str
    api_key: str
    uploads: list[str]  # filenames of every POST /analyses the server received
    idle: Callable[[], bool]  # no open connection and no request running on the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import uvicorn

    from backend.main import create_app

    tmp = tmp_path_factory.mktemp("client-server")
    settings = make_settings(
        tmp, f"sqlite+aiosqlite:///{tmp / 'db.sqlite'}", models_dir, broker_url=DEAD_BROKER
    )
    app = create_app(settings)
    uploads: list[str] = []

    async def counting(scope, receive, send):  # noqa: ANN001, ANN202 - a plain ASGI wrapper
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/analyses":
            uploads.append(scope["path"])
        await app(scope, receive, send)

    port = _free_port()
    config = uvicorn.Config(counting, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url) as http:
            http.post("/auth/signup", json={"email": "bot@example.org", "password": "pass-word-1"})
            token = http.post(
                "/auth/token", data={"username": "bot@example.org", "password": "pass-word-1"}
            ).json()["access_token"]
            key = http.post(
                "/auth/api-keys",
                json={"name": "batch"},
                headers={"Authorization": f"Bearer {token}"},
            ).json()["key"]
        state = srv.server_state
        yield Server(url, key, uploads, lambda: not state.connections and not state.tasks)
    finally:
        srv.should_exit = True
        thread.join(60)


def _folder(root: Path) -> dict[str, bytes]:
    files = {f"slice_{i}.png": samples.phantom_png(i) for i in range(7)}
    files["sub/vol_a.npy"] = samples.npy(samples.phantom(40))
    files["sub/deeper/vol_b.npy"] = samples.npy(samples.phantom(41))
    files["broken.png"] = samples.not_an_image()
    for name, data in {**files, "notes.txt": b"skip me", ".hidden.png": b"skip"}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def default_ctrl_c() -> Iterator[None]:
    """Python's own SIGINT handler, as in a fresh ``spondyscan client`` process (an earlier test's
    event loop or server may have left another one installed in this process)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_interrupted_batch_resumes_with_only_the_missing_uploads(
    server: Server, tmp_path: Path, default_ctrl_c: None
) -> None:
    folder = tmp_path / "scans"
    files = _folder(folder)
    out = tmp_path / "results.csv"
    options = {"concurrency": 2, "explain": False, "progress": False}

    seen: list[FileResult] = []

    def interrupt_after_four(result: FileResult) -> None:
        seen.append(result)
        if len(seen) == 4:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, mid-run

    with pytest.raises(KeyboardInterrupt):
        analyze_folder(
            folder,
            out,
            server=server.url,
            api_key=server.api_key,
            on_result=interrupt_after_four,
            **options,
        )
    journal = [json.loads(line) for line in out.with_name("results.csv.state").open()]
    recorded = {e["path"] for e in journal}
    assert 4 <= len(recorded) < len(files)
    assert {r["path"] for r in _rows(out)} == recorded
    # An upload cut off by the interruption may still be running (or just arriving) on the
    # server: wait until the interrupted client's connections are gone and no request runs.
    deadline = time.monotonic() + 60
    while not server.idle():
        assert time.monotonic() < deadline, "the interrupted run's requests never finished"
        time.sleep(0.02)
    before = len(server.uploads)

    # The rerun, through the command line, uploads exactly the files not recorded.
    code = spondyscan(
        [
            "client",
            "analyze",
            str(folder),
            "--server",
            server.url,
            "--api-key",
            server.api_key,
            "--out",
            str(out),
            "--concurrency",
            "2",
            "--no-explain",
            "--no-progress",
        ]
    )
    assert code == 0
    assert len(server.uploads) - before == len(files) - len(recorded)
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == sorted(files)
    by_path = {r["path"]: r for r in rows}
    assert by_path["broken.png"]["status"] == "failed"
    assert by_path["broken.png"]["error_code"] == "unsupported_format"
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) == len(files) - 1
    assert all(r["model"] == "cnn_tiny" and r["as_status"] and r["analysis_id"] for r in done)
    assert all(r["research_use_only"] == "true" for r in rows)

    # Nothing missing: nothing uploaded. A changed file: only that one.
    before = len(server.uploads)
    summary = analyze_folder(folder, out, server=server.url, api_key=server.api_key, **options)
    assert len(server.uploads) == before and summary.already_done == len(files)
    (folder / "slice_0.png").write_bytes(samples.phantom_png(99))
    summary = analyze_folder(folder, out, server=server.url, api_key=server.api_key, **options)
    assert len(server.uploads) == before + 1 and summary.done == 1
    # --retry-failed sends the refused file again, and only it.
    summary = analyze_folder(
        folder, out, server=server.url, api_key=server.api_key, retry_failed=True, **options
    )
    assert len(server.uploads) == before + 2 and summary.failed == 1
    assert sum(r["path"] == "broken.png" for r in _rows(out)) == 1


def test_cli_refuses_without_credentials(tmp_path: Path) -> None:
    assert spondyscan(["client", "analyze", str(tmp_path), "--out", str(tmp_path / "r.csv")]) != 0


async def test_busy_server_is_retried_after_retry_after() -> None:
    calls: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(
                503,
                headers={"Retry-After": "1"},
                json={"code": "busy", "message": "The server is busy."},
            )
        if request.url.path == "/analyses":
            return httpx.Response(200, json={"id": "abc", "classifications": []})
        return httpx.Response(400, json={"code": "unsupported_format", "message": "no"})

    async with SpondyscanClient(
        "http://server", api_key="k", transport=httpx.MockTransport(handler)
    ) as client:
        body = await client.analyze(b"data", "x.png")
        assert body["id"] == "abc" and client.retries == 1
        assert calls[1] - calls[0] >= 0.95
        with pytest.raises(ClientError) as err:
            await client.get_job("nope")
        assert err.value.code == "unsupported_format" and err.value.permanent


async def test_a_request_that_creates_something_is_not_sent_twice() -> None:
    # A timeout or gateway error after the body went out: the server may have started the study,
    # so it is not sent again. No connection at all, or a 503 refusal: it is.
    failures: list[Exception | int] = []
    calls: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if failures:
            failure = failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure, json={"code": "gateway", "message": "Gateway."})
        return httpx.Response(202, json={"id": "s1", "status": "queued"})

    async with SpondyscanClient(
        "http://server", api_key="k", transport=httpx.MockTransport(handler)
    ) as client:
        client._sleep = lambda _s: asyncio.sleep(0)
        for failure in (httpx.ReadTimeout("slow"), 504, 502):
            failures[:], calls[:] = [failure], []
            with pytest.raises(ClientError) as err:
                await client.submit_study([("a.dcm", b"x")])
            assert len(calls) == 1 and not err.value.permanent, failure
        for failure in (httpx.ConnectError("refused"), 503):
            failures[:], calls[:] = [failure], []
            assert (await client.submit_study([("a.dcm", b"x")]))["id"] == "s1"
            assert len(calls) == 2, failure
        # A read (idempotent) is sent again after a timeout.
        failures[:], calls[:] = [httpx.ReadTimeout("slow")], []
        assert (await client.request("GET", "/studies/s1")).status_code == 202
        assert len(calls) == 2


async def test_job_methods(server: Server) -> None:
    async with SpondyscanClient(server.url, api_key=server.api_key) as client:
        job = await client.submit_job(
            [("a.png", samples.phantom_png(1)), ("b.png", samples.phantom_png(2))],
            explain=False,
        )
        assert job["status"] in ("queued", "running") and job["progress"]["total"] == 2
        job = await client.wait_job(job["id"], poll=0.2, timeout=60)
        assert job["status"] == "completed" and job["progress"]["done"] == 2
        text = await client.job_results_csv(job["id"])
        assert text.splitlines()[0].startswith("job_id,index,filename")
        assert len(text.strip().splitlines()) == 3
        results = await client.job_results_json(job["id"])
        assert all(i["analysis"]["kind"] == "analysis" for i in results["items"])
        listed = await client.list_jobs()
        assert job["id"] in [j["id"] for j in listed["items"]]
        again = await client.cancel_job(job["id"])  # finished: a no-op
        assert again["status"] == "completed"
    await asyncio.sleep(0)


def test_cli_study_sends_a_series_and_writes_its_answer(server: Server, tmp_path: Path) -> None:
    import gzip

    import nibabel as nib

    from ml.data.synthetic_series import dicom_series, phantom_series

    series = phantom_series(12, 96, seed=3)
    folder = tmp_path / "PATIENT" / "SERIES"
    folder.mkdir(parents=True)
    for name, data in dicom_series(series, seed=3):
        (folder / name).write_bytes(data)
    out = tmp_path / "answer"
    code = spondyscan(
        [
            "client", "study", str(tmp_path / "PATIENT"), "--server", server.url,
            "--api-key", server.api_key, "--out", str(out), "--no-progress", "--no-explain",
            "--allow-out-of-domain",
        ]
    )  # fmt: skip
    assert code == 0
    study = json.loads((out / "study.json").read_text())
    assert study["status"] == "done" and study["result"]["input"]["slices"] == 12
    mask = nib.Nifti1Image.from_bytes(gzip.decompress((out / "mask.nii.gz").read_bytes()))
    assert mask.shape == (96, 96, 12)
    # A path that is not there is a clear error, not a traceback.
    missing = ["client", "study", str(tmp_path / "nope"), "--server", server.url]
    assert spondyscan([*missing, "--api-key", server.api_key]) != 0
