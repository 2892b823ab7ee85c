"""Faults against a live API process (embedded back end): SIGKILL it mid-analysis and
mid-job item, start it again on the same data, and check that nothing was lost, nothing
duplicated, nothing half-written, and that an item that keeps killing it is failed."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import api_samples
import httpx
import numpy as np
import pytest
from live_api import LiveApi, tiny_models

# Timing-sensitive (windows, waits, processes started or killed): `make test` runs it alone.
pytestmark = pytest.mark.serial

# A slice that takes a second or two to decode and explain with the tiny models, so a kill
# lands while it is being processed.
SLOW = {"faithfulness_steps": 200, "max_upload_bytes": 64 * 1024 * 1024, "max_pixels": 10**7}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models(tmp_path_factory.mktemp("fault-models"))


@pytest.fixture(scope="module")
def slow_dicom() -> bytes:
    rng = np.random.default_rng(0)
    return api_samples.dicom((rng.random((2500, 2500)) * 4000).astype(np.uint16))


def _rows(api: LiveApi, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(api.data_dir / "api.db") as db:
        return list(db.execute(sql, args))


def _ids(values: list[tuple[Any, ...]]) -> set[str]:
    return {str(uuid.UUID(str(v[0]))) for v in values}


def _assert_store_matches_rows(api: LiveApi, timeout: float = 20.0) -> set[str]:
    """Every analysis row has its folder, every folder its row; nothing staged or trashed."""
    root = api.data_dir / "artifacts"
    deadline = time.monotonic() + timeout
    while True:
        rows = _ids(_rows(api, "SELECT id FROM analyses"))
        folders = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        leftovers = [*(root / ".staging").iterdir(), *(root / ".trash").iterdir()]
        # Housekeeping runs at start-up, next to the first requests: give it a moment.
        if (rows == folders and not leftovers) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rows == folders, (rows ^ folders, api.log_tail())
    assert not leftovers, leftovers
    for analysis_id in rows:
        assert (root / analysis_id / "input.png").is_file()
    return rows


def test_api_killed_mid_analysis_leaves_nothing_half_made(
    tmp_path: Path, models: Path, slow_dicom: bytes
) -> None:
    api = LiveApi(tmp_path, models, orphan_grace_seconds=0, **SLOW).start()
    token = api.token("faults@example.org")
    headers = {"Authorization": f"Bearer {token}"}
    answered: list[str] = []

    def analyse(n: int) -> None:
        data = slow_dicom if n % 2 else api_samples.phantom_png(n)
        try:
            r = httpx.post(
                f"{api.base}/analyses",
                files={"file": (f"s{n}", data)},
                headers=headers,
                timeout=60,
            )
        except httpx.HTTPError:
            return  # the server died under it
        if r.status_code == 200:
            answered.append(r.json()["id"])

    threads = [threading.Thread(target=analyse, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    api.kill()
    for t in threads:
        t.join(30)
    # The kill landed while analyses were in flight (else this test would prove nothing).
    assert len(answered) < len(threads), "every analysis finished before the kill"
    again = LiveApi(tmp_path, models, orphan_grace_seconds=0, **SLOW)
    again.port, again.base = api.port, api.base
    again.start()
    try:
        stored = _assert_store_matches_rows(again)
        # Nothing a client was told about is lost.
        assert set(answered) <= stored
        r = httpx.get(f"{again.base}/history", params={"limit": 100}, headers=headers)
        assert {item["id"] for item in r.json()["items"]} == stored
    finally:
        again.stop()


def _wait_running(
    api: LiveApi, job_id: str, index: int, timeout: float = 60.0, not_by: str | None = None
) -> str | None:
    """Poll the job until item ``index`` runs under a worker other than ``not_by`` (its worker
    is returned: a killed process' row still says running until a live one takes it over) or
    the item is finished (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _rows(
            api, "SELECT status, worker FROM job_items WHERE job_id = ? AND \"index\" = ?",
            uuid.UUID(job_id).hex, index,
        )  # fmt: skip
        if rows and rows[0][0] == "running" and rows[0][1] != not_by:
            return str(rows[0][1])
        if rows and rows[0][0] in ("done", "failed", "cancelled"):
            return None
        time.sleep(0.01)
    raise AssertionError(f"item {index} never ran:\n{api.log_tail()}")


def _still_running(api: LiveApi, job_id: str, index: int, worker: str) -> bool:
    rows = _rows(
        api, "SELECT status, worker FROM job_items WHERE job_id = ? AND \"index\" = ?",
        uuid.UUID(job_id).hex, index,
    )  # fmt: skip
    return bool(rows) and tuple(rows[0]) == ("running", worker)


def test_item_that_keeps_killing_the_api_is_failed_and_the_rest_done_once(
    tmp_path: Path, models: Path, slow_dicom: bytes
) -> None:
    settings = {"job_max_attempts": 2, "job_concurrency": 1, "orphan_grace_seconds": 0, **SLOW}
    api = LiveApi(tmp_path, models, **settings).start()
    headers = {"Authorization": f"Bearer {api.token('poison@example.org')}"}
    files = [("files", ("poison.dcm", slow_dicom))]
    files += [("files", (f"ok{n}.png", api_samples.phantom_png(n))) for n in range(2)]
    r = httpx.post(f"{api.base}/jobs", files=files, headers=headers, timeout=60)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    kills, worker = 0, None
    try:
        # Whenever the poison item runs, the process dies (as an out-of-memory kill would).
        while worker := _wait_running(api, job_id, 0, not_by=worker):
            api.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            if not _still_running(api, job_id, 0, worker):
                # Between our look and the stop the item was given back (a transient refusal:
                # it will be claimed again), so it was not running: let the process go on.
                api.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
                worker = None
                continue
            api.kill()
            kills += 1
            assert kills <= 2, "the item was retried after its attempts were spent"
            port = api.port
            api = LiveApi(tmp_path, models, **settings)
            api.port, api.base = port, f"http://127.0.0.1:{port}"
            api.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = httpx.get(f"{api.base}/jobs/{job_id}", headers=headers).json()
            if job["status"] == "completed":
                break
            time.sleep(0.2)
        assert kills == 2
        items = {i["index"]: i for i in job["items"]}
        assert job["status"] == "completed", job
        assert items[0]["status"] == "failed" and items[0]["error"]["code"] == "worker_lost"
        assert [items[n]["status"] for n in (1, 2)] == ["done", "done"]
        stored = _assert_store_matches_rows(api)
        per_job = _rows(api, "SELECT id FROM analyses WHERE job_id = ?", job_id)
        assert len(per_job) == 2 and _ids(per_job) <= stored  # each done item exactly once
        inputs = api.data_dir / "artifacts" / ".jobs"
        assert not any(p.name.startswith(job_id) for p in inputs.rglob("*")), "inputs kept"
    finally:
        api.stop()
