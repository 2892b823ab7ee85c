"""Batch jobs on the embedded back end (in the API process, SQLite, no Redis at all):
the API, per-item errors, zips, cancel, owners only, exports, and the exactly-once pieces."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import api_samples as samples
import httpx
import pytest
from api_helpers import DatabaseUrls, make_settings, signup_and_login
from jobs_helpers import DEAD_BROKER, images, make_zip, multipart, wait_job
from sqlalchemy import func, select, update

from backend.core.config import Settings
from backend.models import Analysis, AuditEvent, Job, JobItem
from backend.services import job_processing
from backend.services.housekeeping import reap_cancelled_jobs
from backend.services.job_intake import job_inputs
from backend.services.jobs import item_analysis_id

# Timing-sensitive (windows, waits, processes started or killed): `make test` runs it alone.
pytestmark = pytest.mark.serial


@dataclass
class JobEnv:
    app: object
    client: httpx.AsyncClient
    settings: Settings
    alice: dict[str, str]
    bob: dict[str, str]

    @property
    def runtime(self):  # noqa: ANN201 - the app's Runtime
        return self.app.state.runtime  # type: ignore[attr-defined]

    async def scalar(self, query):  # noqa: ANN001, ANN201
        async with self.runtime.sessionmaker() as session:
            return await session.scalar(query)


def embedded_settings(tmp: Path, url: str, models_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "job_backend": "embedded",
        "broker_url": DEAD_BROKER,
        "job_concurrency": 2,
        "job_max_items": 40,
    }
    values.update(overrides)
    return make_settings(tmp, url, models_dir, **values)


@pytest.fixture(scope="module")
async def jenv(
    databases: DatabaseUrls, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[JobEnv]:
    from backend.main import create_app

    url = await databases.new("sqlite")
    settings = embedded_settings(tmp_path_factory.mktemp("jobs-embedded"), url, models_dir)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            alice = await signup_and_login(client, "alice@example.org")
            bob = await signup_and_login(client, "bob@example.org")
            yield JobEnv(app, client, settings, alice, bob)


async def _analyses_of(env: JobEnv, job_id: str) -> int:
    return int(await env.scalar(select(func.count(Analysis.id)).where(Analysis.job_id == job_id)))


async def test_embedded_backend_needs_no_broker(jenv: JobEnv) -> None:
    executor = jenv.app.state.job_executor  # type: ignore[attr-defined]
    assert executor.name == "embedded"
    assert jenv.settings.broker_url == DEAD_BROKER  # nothing listens there


async def test_many_files_bad_items_fail_alone(jenv: JobEnv) -> None:
    good = images(5)
    bad = {
        "report.pdf": samples.not_an_image(),  # unsupported_format
        "cut.png": samples.truncated_png(),  # corrupt_image
        "blank.png": samples.blank_png(),  # empty_image (no content)
        "huge.png": samples.huge_png(),  # too_large (pixels)
        "big.npy": b"\x93NUMPY" + b"\0" * (3 * 1024 * 1024 + 10),  # too_large (bytes)
    }
    files = good[:3] + list(bad.items()) + good[3:]
    r = await jenv.client.post("/jobs", files=multipart(files), headers=jenv.alice)
    assert r.status_code == 202, r.text
    created = r.json()
    assert r.headers["location"] == f"/jobs/{created['id']}"
    assert created["progress"]["total"] == len(files)
    assert created["research_use_only"] is True and "not a diagnosis" in created["notice"]

    job = await wait_job(jenv.client, created["id"], jenv.alice)
    assert job["status"] == "completed"
    assert job["progress"] | {"percent": 0} == {
        "total": 10,
        "done": 5,
        "failed": 5,
        "cancelled": 0,
        "queued": 0,
        "running": 0,
        "finished": 10,
        "percent": 0,
    }
    by_name = {item["filename"]: item for item in job["items"]}
    expected = {
        "report.pdf": "unsupported_format",
        "cut.png": "corrupt_image",
        "blank.png": "empty_image",
        "huge.png": "too_large",
        "big.npy": "too_large",
    }
    for name, code in expected.items():
        item = by_name[name]
        assert item["status"] == "failed" and item["error"]["code"] == code, item
        assert item["analysis_id"] is None and item["result"] is None
    assert [i["index"] for i in job["items"]] == list(range(10))

    # Every good file is an analysis in the owner's history, with the item's own id.
    for name, _ in good:
        item = by_name[name]
        assert item["status"] == "done" and item["error"] is None
        assert item["analysis_id"] == str(item_analysis_id(uuid.UUID(job["id"]), item["index"]))
        [c] = item["result"]["classifications"]
        assert c["model"] == "cnn_tiny" and c["as_status"] in ("negative", "positive")
        r = await jenv.client.get(item["result_url"], headers=jenv.alice)
        assert r.status_code == 200 and r.json()["kind"] == "analysis"
        assert r.json()["image"]["filename"] == name
    assert await _analyses_of(jenv, job["id"]) == 5
    # The failed items left no files, and the job's stored inputs are gone once it finished.
    assert jenv.runtime.store.count_dirs() >= 5 and not jenv.runtime.store.leftovers()
    assert not job_inputs(jenv.settings).exists(uuid.UUID(job["id"]))


async def test_zip_job_with_models_and_exports(jenv: JobEnv) -> None:
    members = {
        "study/": b"",
        "study/a.png": samples.phantom_png(11),
        "study/b.png": samples.phantom_png(12),
        "study/.DS_Store": b"junk",
        "__MACOSX/study/._a.png": b"junk",
        "study/c.npy": samples.npy(samples.phantom(13)),
        "study/notes.txt": b"not an image",
    }
    r = await jenv.client.post(
        "/jobs",
        files=[("files", ("study.zip", make_zip(members), "application/zip"))],
        data={"models": ["cnn_tiny", "cnn_clinical"], "explain": "false"},
        headers=jenv.alice,
    )
    assert r.status_code == 202, r.text
    job = await wait_job(jenv.client, r.json()["id"], jenv.alice)
    names = [i["filename"] for i in job["items"]]
    assert names == ["study/a.png", "study/b.png", "study/c.npy", "study/notes.txt"]
    assert [i["status"] for i in job["items"]] == ["done", "done", "done", "failed"]
    assert job["options"]["models"] == ["cnn_tiny", "cnn_clinical"]
    assert job["options"]["explain"] is False
    first = job["items"][0]["result"]
    assert [c["model"] for c in first["classifications"]] == ["cnn_tiny", "cnn_clinical"]
    assert first["explanations"] == []

    r = await jenv.client.get(f"/jobs/{job['id']}/results.csv", headers=jenv.alice)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["filename"] for row in rows] == names
    assert rows[0]["cnn_clinical.as_status"] in ("negative", "positive")
    assert rows[3]["status"] == "failed" and rows[3]["error_code"] == "unsupported_format"
    assert all(row["research_use_only"] == "true" for row in rows)

    r = await jenv.client.get(f"/jobs/{job['id']}/results.json", headers=jenv.alice)
    assert r.status_code == 200
    body = r.json()
    assert body["research_use_only"] is True and body["job"]["id"] == job["id"]
    assert body["items"][0]["analysis"]["id"] == job["items"][0]["analysis_id"]
    assert body["items"][3]["analysis"] is None and body["items"][3]["error"]["code"]

    # Deleting an item's analysis from history leaves the job readable, the item unlinked.
    first_id = job["items"][0]["analysis_id"]
    r = await jenv.client.delete(f"/history/{first_id}", headers=jenv.alice)
    assert r.status_code == 204
    job = (await jenv.client.get(f"/jobs/{job['id']}", headers=jenv.alice)).json()
    assert job["items"][0]["status"] == "done" and job["items"][0]["analysis_id"] is None
    assert job["items"][0]["result"]["classifications"]


async def test_bad_requests_leave_nothing(jenv: JobEnv) -> None:
    jobs_before = await jenv.scalar(select(func.count(Job.id)))
    store = job_inputs(jenv.settings)
    r = await jenv.client.post(
        "/jobs", files=multipart(images(2)), data={"models": ["nope"]}, headers=jenv.alice
    )
    assert r.status_code == 400 and r.json()["code"] == "unknown_model"
    r = await jenv.client.post("/jobs", files=multipart(images(41)), headers=jenv.alice)
    assert r.status_code == 413 and r.json()["code"] == "too_many_items"
    r = await jenv.client.post(
        "/jobs",
        files=[("files", ("x.zip", make_zip({"d/": b""}), "application/zip"))],
        headers=jenv.alice,
    )
    assert r.status_code == 400 and r.json()["code"] == "no_files"
    r = await jenv.client.post("/jobs", data={"explain": "true"}, headers=jenv.alice)
    assert r.status_code == 422
    r = await jenv.client.post("/jobs", files=multipart(images(1)))
    assert r.status_code == 401
    assert await jenv.scalar(select(func.count(Job.id))) == jobs_before
    assert [p.name for p in store.root.iterdir() if p.name != ".staging"] == []
    assert list(store.staging_dir.iterdir()) == []


async def test_owners_only(jenv: JobEnv) -> None:
    r = await jenv.client.post("/jobs", files=multipart(images(1, 20)), headers=jenv.alice)
    job_id = r.json()["id"]
    await wait_job(jenv.client, job_id, jenv.alice)
    for method, path in [
        ("GET", f"/jobs/{job_id}"),
        ("POST", f"/jobs/{job_id}/cancel"),
        ("GET", f"/jobs/{job_id}/results.csv"),
        ("GET", f"/jobs/{job_id}/results.json"),
    ]:
        r = await jenv.client.request(method, path, headers=jenv.bob)
        assert r.status_code == 404 and r.json()["code"] == "job_not_found", (path, r.text)
        r = await jenv.client.request(method, path)
        assert r.status_code == 401, path
    r = await jenv.client.get(f"/jobs/{uuid.uuid4()}", headers=jenv.alice)
    assert r.status_code == 404
    mine = (await jenv.client.get("/jobs", headers=jenv.alice)).json()
    assert mine["total"] >= 1 and job_id in [j["id"] for j in mine["items"]]
    theirs = (await jenv.client.get("/jobs", headers=jenv.bob)).json()
    assert theirs == {"items": [], "total": 0, "limit": 20, "offset": 0}
    done = (await jenv.client.get("/jobs?status=completed&limit=1", headers=jenv.alice)).json()
    assert len(done["items"]) == 1 and done["items"][0]["status"] == "completed"


async def test_cancel_stops_outstanding_items(jenv: JobEnv) -> None:
    r = await jenv.client.post("/jobs", files=multipart(images(24, 30)), headers=jenv.alice)
    job_id = r.json()["id"]
    r = await jenv.client.post(f"/jobs/{job_id}/cancel", headers=jenv.alice)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    job = await wait_job(jenv.client, job_id, jenv.alice)
    p = job["progress"]
    assert job["status"] == "cancelled" and job["cancelled_at"]
    assert p["cancelled"] > 0 and p["done"] + p["failed"] + p["cancelled"] == 24
    assert p["queued"] == p["running"] == 0
    await asyncio.sleep(1.0)  # nothing cancelled starts later
    again = (await jenv.client.get(f"/jobs/{job_id}", headers=jenv.alice)).json()
    assert again["progress"] == p
    assert await _analyses_of(jenv, job_id) == p["done"]
    assert not job_inputs(jenv.settings).exists(uuid.UUID(job_id))
    # Cancelling again, or a finished job, changes nothing.
    r = await jenv.client.post(f"/jobs/{job_id}/cancel", headers=jenv.alice)
    assert r.status_code == 200 and r.json()["progress"] == p
    events = await jenv.scalar(
        select(func.count(AuditEvent.id)).where(
            AuditEvent.action == "job.cancel", AuditEvent.target == job_id
        )
    )
    assert events == 1


async def test_redelivered_item_runs_once(jenv: JobEnv) -> None:
    """The pieces that make a duplicate delivery harmless, driven directly."""
    r = await jenv.client.post("/jobs", files=multipart(images(2, 60)), headers=jenv.alice)
    job_id = uuid.UUID(r.json()["id"])
    await wait_job(jenv.client, str(job_id), jenv.alice)
    runtime = jenv.runtime
    aid = item_analysis_id(job_id, 0)

    # A late duplicate of a finished item does nothing.
    out = await job_processing.process_item(runtime, job_id, 0, "dup-worker")
    assert out.status == "skipped"

    # A worker died after storing the analysis but before recording the item: the next
    # delivery (once the lease lapsed) finds the analysis and finishes without a second one.
    async with runtime.sessionmaker() as session:
        await session.execute(
            update(JobItem)
            .where(JobItem.job_id == job_id, JobItem.index == 0)
            .values(status="running", worker="dead", lease_until=None, analysis_id=None)
        )
        await session.execute(update(Job).where(Job.id == job_id).values(finished_at=None))
        await session.commit()
    out = await job_processing.process_item(runtime, job_id, 0, "second-worker")
    assert out.status == "done"
    assert await _analyses_of(jenv, str(job_id)) == 2
    job = (await jenv.client.get(f"/jobs/{job_id}", headers=jenv.alice)).json()
    assert job["items"][0]["analysis_id"] == str(aid) and job["items"][0]["attempts"] == 2

    # A live claim is not taken over: the duplicate is asked to come back later.
    async with runtime.sessionmaker() as session:
        from backend.db.base import utcnow

        await session.execute(
            update(JobItem)
            .where(JobItem.job_id == job_id, JobItem.index == 1)
            .values(status="running", worker="alive", lease_until=utcnow().replace(year=2999))
        )
        await session.commit()
    out = await job_processing.process_item(runtime, job_id, 1, "third-worker")
    assert out.status == "retry" and out.retry_in >= 1


async def test_restart_resumes_unfinished_jobs(
    databases: DatabaseUrls, models_dir: Path, tmp_path: Path
) -> None:
    """Stopping the API mid-job and starting it again finishes every item exactly once."""
    from backend.main import create_app

    url = await databases.new("sqlite")
    settings = embedded_settings(tmp_path, url, models_dir, job_concurrency=1)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = await signup_and_login(client, "carol@example.org")
            r = await client.post("/jobs", files=multipart(images(12, 40)), headers=headers)
            job_id = r.json()["id"]
            for _ in range(200):
                job = (await client.get(f"/jobs/{job_id}", headers=headers)).json()
                if job["progress"]["done"] >= 2:
                    break
                await asyncio.sleep(0.05)
    # Shut down with items queued (and perhaps one cut off mid-way).
    assert job["progress"]["done"] < 12

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post(
                "/auth/token", data={"username": "carol@example.org", "password": "pass-word-1"}
            )
            headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
            job = await wait_job(client, job_id, headers)
            assert job["status"] == "completed" and job["progress"]["done"] == 12
            runtime = app.state.runtime
            async with runtime.sessionmaker() as session:
                ids = set(
                    await session.scalars(select(Analysis.id).where(Analysis.job_id == job_id))
                )
            assert ids == {item_analysis_id(uuid.UUID(job_id), i) for i in range(12)}
            assert runtime.store.count_dirs() == 12 and not runtime.store.leftovers()


async def _pretend_worker_died(env: JobEnv, job_id: uuid.UUID, index: int) -> None:
    """What a killed worker leaves: its item running under a lease that lapsed."""
    from backend.db.base import utcnow

    async with env.runtime.sessionmaker() as session:
        await session.execute(
            update(JobItem)
            .where(JobItem.job_id == job_id, JobItem.index == index)
            .values(status="running", worker="dead", lease_until=utcnow().replace(year=2000))
        )
        await session.execute(update(Job).where(Job.id == job_id).values(finished_at=None))
        await session.commit()


async def test_poison_item_fails_after_its_workers_die(jenv: JobEnv) -> None:
    """An item whose worker dies every time is taken over at most job_max_attempts times,
    then failed with worker_lost; its job closes and its inputs go."""
    r = await jenv.client.post("/jobs", files=multipart(images(1, 70)), headers=jenv.alice)
    job_id = uuid.UUID(r.json()["id"])
    await wait_job(jenv.client, str(job_id), jenv.alice)
    runtime = jenv.runtime
    async with runtime.sessionmaker() as session:
        await session.execute(
            update(JobItem).where(JobItem.job_id == job_id).values(analysis_id=None, lost=0)
        )
        await session.commit()
    await _pretend_worker_died(jenv, job_id, 0)
    # Each takeover counts a lost worker; the claim itself is where the item would run (and,
    # for a poison item, kill its worker again).
    for lost in range(1, jenv.settings.job_max_attempts):
        claimed = await job_processing._claim(runtime, job_id, 0, f"worker-{lost}")
        assert not isinstance(claimed, job_processing.ItemOutcome), claimed
        await _pretend_worker_died(jenv, job_id, 0)
    out = await job_processing.process_item(runtime, job_id, 0, "last-worker")
    assert out.status == "failed" and out.detail == "worker_lost"
    job = (await jenv.client.get(f"/jobs/{job_id}", headers=jenv.alice)).json()
    item = job["items"][0]
    assert item["status"] == "failed" and item["error"]["code"] == "worker_lost"
    assert f"{jenv.settings.job_max_attempts} times" in item["error"]["message"]
    # It was handed out once per run (the first and each takeover), not once more to fail it.
    assert item["attempts"] == jenv.settings.job_max_attempts
    assert job["status"] == "completed" and job["finished_at"]
    # Delivered once more (a broker redelivery): still nothing runs.
    out = await job_processing.process_item(runtime, job_id, 0, "late-worker")
    assert out.status == "skipped"


async def test_cancel_closes_items_whose_worker_died(jenv: JobEnv) -> None:
    r = await jenv.client.post("/jobs", files=multipart(images(2, 80)), headers=jenv.alice)
    job_id = uuid.UUID(r.json()["id"])
    await wait_job(jenv.client, str(job_id), jenv.alice)
    # Leave the job open with one item held by a dead worker, its input still stored.
    store = job_inputs(jenv.settings)
    staged = store.stage(job_id)
    staged.add_stream(1, io.BytesIO(samples.phantom_png(3)), 10**7)
    staged.commit()
    await _pretend_worker_died(jenv, job_id, 1)
    r = await jenv.client.post(f"/jobs/{job_id}/cancel", headers=jenv.alice)
    job = r.json()
    assert job["status"] == "cancelled" and job["finished_at"], job
    assert job["items"][1]["status"] == "cancelled", job
    assert job["progress"]["running"] == 0
    assert not store.exists(job_id)


async def test_reaper_closes_cancelled_jobs_once_leases_lapse(jenv: JobEnv) -> None:
    from backend.db.base import utcnow

    r = await jenv.client.post("/jobs", files=multipart(images(1, 90)), headers=jenv.alice)
    job_id = uuid.UUID(r.json()["id"])
    await wait_job(jenv.client, str(job_id), jenv.alice)
    # Cancelled while a worker held the item under a live lease; then that worker died.
    async with jenv.runtime.sessionmaker() as session:
        await session.execute(
            update(JobItem)
            .where(JobItem.job_id == job_id)
            .values(status="running", worker="w", lease_until=utcnow().replace(year=2999))
        )
        await session.execute(
            update(Job).where(Job.id == job_id).values(finished_at=None, cancelled_at=utcnow())
        )
        await session.commit()
    assert await reap_cancelled_jobs(jenv.runtime) == 0  # the lease is still live
    await _pretend_worker_died(jenv, job_id, 0)
    assert await reap_cancelled_jobs(jenv.runtime) == 1
    job = (await jenv.client.get(f"/jobs/{job_id}", headers=jenv.alice)).json()
    assert job["status"] == "cancelled" and job["items"][0]["status"] == "cancelled"


async def test_a_job_reads_completed_only_once_closed(jenv: JobEnv) -> None:
    """Every item done but the job not closed (its process stopped in between): the job still
    reads running and keeps its inputs until housekeeping closes it; "completed" means the
    inputs are gone."""
    r = await jenv.client.post("/jobs", files=multipart(images(1, 95)), headers=jenv.alice)
    job_id = uuid.UUID(r.json()["id"])
    job = await wait_job(jenv.client, str(job_id), jenv.alice)
    assert job["status"] == "completed" and job["finished_at"]
    store = job_inputs(jenv.settings)
    assert not store.exists(job_id)
    staged = store.stage(job_id)
    staged.add_stream(0, io.BytesIO(samples.phantom_png(4)), 10**7)
    staged.commit()
    async with jenv.runtime.sessionmaker() as session:
        await session.execute(update(Job).where(Job.id == job_id).values(finished_at=None))
        await session.commit()
    job = (await jenv.client.get(f"/jobs/{job_id}", headers=jenv.alice)).json()
    assert job["status"] == "running" and job["progress"]["percent"] == 100.0, job
    assert await reap_cancelled_jobs(jenv.runtime) == 1
    job = (await jenv.client.get(f"/jobs/{job_id}", headers=jenv.alice)).json()
    assert job["status"] == "completed" and job["finished_at"], job
    assert not store.exists(job_id)
    assert await reap_cancelled_jobs(jenv.runtime) == 0


async def test_a_zero_byte_file_refuses_the_job(jenv: JobEnv) -> None:
    """The schema asks for non-empty files: a 0-byte part is refused up front, nothing kept."""
    files = [*images(2, 100), ("zero.png", b"")]
    before = await jenv.scalar(select(func.count(Job.id)))
    r = await jenv.client.post("/jobs", files=multipart(files), headers=jenv.alice)
    assert r.status_code == 400 and r.json()["code"] == "empty_image"
    assert "zero.png" in r.json()["message"]
    assert await jenv.scalar(select(func.count(Job.id))) == before
