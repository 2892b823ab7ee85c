"""Batch jobs on the distributed back end, against real services: the API (in this process)
publishes items to Redis, two `spondyscan worker` processes run them on PostgreSQL and a shared
artifact folder -- the topology of docker-compose.yml, as processes."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import api_samples as samples
import httpx
import pytest
from api_helpers import DatabaseUrls, make_settings, postgres_reachable, signup_and_login
from jobs_helpers import (
    DEAD_BROKER,
    FAST_RECOVERY,
    ROOT,
    WorkerProcess,
    assert_same_results,
    flush_redis,
    images,
    multipart,
    redis_reachable,
    redis_url,
    settings_env,
    wait_job,
)
from sqlalchemy import func, select

from backend.core.config import Settings
from backend.models import Analysis, AuditEvent, JobItem, ModelResult
from backend.services.jobs import item_analysis_id

pytestmark = [
    pytest.mark.serial,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.skipif(not redis_reachable(), reason="Redis is not reachable on 127.0.0.1:6379"),
    pytest.mark.skipif(
        not postgres_reachable(), reason="PostgreSQL is not reachable on 127.0.0.1:5432"
    ),
]

N_IMAGES = 30
POISON_SIDE = 4000  # pixels on a side of the item that kills its workers


@dataclass
class Cluster:
    app: object
    client: httpx.AsyncClient
    settings: Settings
    headers: dict[str, str]
    workers: list[WorkerProcess]

    @property
    def runtime(self):  # noqa: ANN201
        return self.app.state.runtime  # type: ignore[attr-defined]

    async def scalar(self, query):  # noqa: ANN001, ANN201
        async with self.runtime.sessionmaker() as session:
            return await session.scalar(query)

    async def items(self, job_id: str) -> list[JobItem]:
        async with self.runtime.sessionmaker() as session:
            rows = await session.scalars(
                select(JobItem).where(JobItem.job_id == uuid.UUID(job_id)).order_by(JobItem.index)
            )
            return list(rows)

    def logs(self) -> str:
        return "\n".join(f"--- {w.name} ---\n{w.log_tail()}" for w in self.workers)


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    flush_redis()
    yield redis_url()
    flush_redis()


@pytest.fixture(scope="module")
async def cluster(
    broker: str,
    databases: DatabaseUrls,
    models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    from backend.main import create_app

    url = await databases.new("postgres")
    tmp = tmp_path_factory.mktemp("jobs-celery")
    settings = make_settings(
        tmp / "data",
        url,
        models_dir,
        job_backend="celery",
        broker_url=broker,
        job_queue=f"spondyscan-test-{uuid.uuid4().hex[:6]}",
        # Room for the poison item below, large so that a worker holds it a while.
        max_pixels=POISON_SIDE**2,
        max_upload_bytes=2 * POISON_SIDE**2 + 1024**2,
        **FAST_RECOVERY,
    )
    app = create_app(settings)
    # Workers load their models while the API starts; they touch the database only once an
    # item arrives, after the API's start-up has migrated it.
    workers: list[WorkerProcess] = []
    try:
        workers = [WorkerProcess(f"w{n}", settings, tmp) for n in (1, 2)]
        async with app.router.lifespan_context(app):
            for w in workers:
                await asyncio.to_thread(w.wait_ready)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                headers = await signup_and_login(client, "dora@example.org")
                yield Cluster(app, client, settings, headers, workers)
    finally:
        for w in workers:
            await asyncio.to_thread(w.stop)


async def _submit(c: Cluster, files: list[tuple[str, bytes]], **data: object) -> str:
    r = await c.client.post("/jobs", files=multipart(files), data=data, headers=c.headers)
    assert r.status_code == 202, r.text
    assert r.json()["backend"] == "celery"
    return str(r.json()["id"])


async def _exactly_once(c: Cluster, job_id: str, n: int) -> None:
    """n items, n analyses with the items' own ids, one audit event and one row set each."""
    ids = {item_analysis_id(uuid.UUID(job_id), i) for i in range(n)}
    async with c.runtime.sessionmaker() as session:
        stored = list(await session.scalars(select(Analysis.id).where(Analysis.job_id == job_id)))
        assert len(stored) == n and set(stored) == ids
        model_rows = await session.scalar(
            select(func.count(ModelResult.id)).where(ModelResult.analysis_id.in_(ids))
        )
        events = await session.scalar(
            select(func.count(AuditEvent.id)).where(
                AuditEvent.action == "inference.analysis",
                AuditEvent.target.in_([str(i) for i in ids]),
            )
        )
    assert model_rows == 2 * n  # segmentation + one classifier, once each
    assert events == n
    store = c.runtime.store
    assert all(store.exists(i) for i in ids)


async def test_thirty_images_on_two_workers_match_embedded(
    cluster: Cluster, databases: DatabaseUrls, models_dir: Path, tmp_path: Path
) -> None:
    files = images(N_IMAGES)
    job_id = await _submit(cluster, files)
    job = await wait_job(cluster.client, job_id, cluster.headers, 150, cluster.logs)
    assert job["status"] == "completed", cluster.logs()
    assert job["progress"]["done"] == N_IMAGES and job["progress"]["failed"] == 0
    await _exactly_once(cluster, job_id, N_IMAGES)
    # Both worker processes took part, and nothing ran in the API process.
    used = {item.worker for item in await cluster.items(job_id)}
    assert used == {w.worker_id for w in cluster.workers}, used

    # The same images on the embedded back end (in-process, SQLite, no Redis): same results.
    from backend.main import create_app

    url = await databases.new("sqlite")
    settings = make_settings(
        tmp_path,
        url,
        models_dir,
        job_backend="embedded",
        broker_url=DEAD_BROKER,
        job_concurrency=1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = await signup_and_login(client, "erin@example.org")
            r = await client.post("/jobs", files=multipart(files), headers=headers)
            assert r.json()["backend"] == "embedded"
            embedded = await wait_job(client, r.json()["id"], headers, 150)
    assert embedded["progress"]["done"] == N_IMAGES
    assert_same_results(job, embedded)


async def test_cancel_and_bad_items_on_workers(cluster: Cluster) -> None:
    files = images(20, 100)
    files.insert(3, ("bad.bin", samples.not_an_image()))
    job_id = await _submit(cluster, files, explain="false")
    r = await cluster.client.post(f"/jobs/{job_id}/cancel", headers=cluster.headers)
    assert r.status_code == 200
    job = await wait_job(cluster.client, job_id, cluster.headers, 60, cluster.logs)
    p = job["progress"]
    assert job["status"] == "cancelled" and p["cancelled"] > 0
    assert p["done"] + p["failed"] + p["cancelled"] == 21
    bad = job["items"][3]
    assert bad["status"] in ("failed", "cancelled")
    if bad["status"] == "failed":
        assert bad["error"]["code"] == "unsupported_format"
    assert (
        await cluster.scalar(select(func.count(Analysis.id)).where(Analysis.job_id == job_id))
        == p["done"]
    )

    # A bad file among good ones fails alone, with its code, on the workers too.
    files = [
        ("a.png", samples.phantom_png(200)),
        ("bad.bin", samples.truncated_png()),
        ("b.png", samples.phantom_png(201)),
    ]
    job_id = await _submit(cluster, files, explain="false")
    job = await wait_job(cluster.client, job_id, cluster.headers, 60, cluster.logs)
    assert [i["status"] for i in job["items"]] == ["done", "failed", "done"]
    assert job["items"][1]["error"]["code"] == "corrupt_image"


async def test_compose_worker_healthcheck_pings_a_live_worker(cluster: Cluster) -> None:
    """docker-compose.yml's worker health check, run against one of these workers."""
    import shlex
    import subprocess
    import sys

    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = compose["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    worker = cluster.workers[0]
    command = shlex.split(test[1].replace("worker@$$HOSTNAME", worker.hostname))
    assert command[0] == "celery"
    command[0] = str(Path(sys.executable).with_name("celery"))
    done = await asyncio.to_thread(
        subprocess.run,
        command,
        env=settings_env(cluster.settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pong" in done.stdout


async def test_worker_killed_mid_job_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    victim, survivor = cluster.workers
    job_id = await _submit(cluster, images(N_IMAGES, 300), explain="false")

    # Catch the victim holding an item: freeze it (SIGSTOP), check it still holds that item,
    # then SIGKILL it -- so it dies mid-item for certain, not just after one.
    held = None
    for _ in range(600):
        running = [
            i
            for i in await cluster.items(job_id)
            if i.status == "running" and i.worker == victim.worker_id
        ]
        if running:
            victim.signal(signal.SIGSTOP)
            still = [
                i
                for i in await cluster.items(job_id)
                if i.index == running[0].index
                and i.status == "running"
                and i.worker == victim.worker_id
            ]
            if still:
                held = still[0].index
                victim.signal(signal.SIGKILL)
                break
            victim.signal(signal.SIGCONT)
        await asyncio.sleep(0.02)
    assert held is not None, "the victim never picked up an item\n" + cluster.logs()
    await asyncio.to_thread(victim.proc.wait, 10)

    job = await wait_job(cluster.client, job_id, cluster.headers, 120, cluster.logs)
    assert job["status"] == "completed", cluster.logs()
    assert job["progress"]["done"] == N_IMAGES and job["progress"]["failed"] == 0
    await _exactly_once(cluster, job_id, N_IMAGES)
    taken_over = job["items"][held]
    assert taken_over["attempts"] == 2, taken_over
    item = next(i for i in await cluster.items(job_id) if i.index == held)
    assert item.worker == survivor.worker_id
    assert not cluster.runtime.store.leftovers()


async def test_item_that_kills_its_workers_is_failed_after_its_attempts(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A poison item: every worker that takes it dies (SIGKILL, as out-of-memory would). It is
    taken over job_max_attempts - 1 times, then failed with worker_lost; the rest of the job
    is done once. (Runs last: it replaces the module's workers as it kills them.)"""
    import numpy as np

    rng = np.random.default_rng(1)
    # As large as the module's limits allow (11 times the pixels of a 1200 px image, which a
    # worker finished in under half a second): the loop below must see it running to kill its
    # holder, also on a loaded machine.
    poison = samples.dicom((rng.random((POISON_SIDE, POISON_SIDE)) * 4000).astype(np.uint16))
    job_id = await _submit(cluster, [("poison.dcm", poison), *images(3, 400)], explain="false")
    kills, attempts = 0, cluster.settings.job_max_attempts
    deadline = asyncio.get_running_loop().time() + 240
    # The item kills each of the workers that runs it, until its attempts are spent; the next
    # claim must fail it without running it (so no further worker is harmed).
    while kills < attempts and asyncio.get_running_loop().time() < deadline:
        item = (await cluster.items(job_id))[0]
        if item.status in ("done", "failed"):
            break
        holder = next(
            (w for w in cluster.workers if w.worker_id == item.worker and w.proc.poll() is None),
            None,
        )
        if item.status == "running" and holder is not None:
            holder.signal(signal.SIGSTOP)
            holder.signal(signal.SIGKILL)
            await asyncio.to_thread(holder.proc.wait, 10)
            kills += 1
            # A replacement, so some worker is always there to take the item over; it loads
            # its models while this loop keeps watching the others.
            fresh = WorkerProcess(f"w{len(cluster.workers) + 1}", cluster.settings, tmp_path)
            cluster.workers.append(fresh)
        await asyncio.sleep(0.01)
    job = await wait_job(cluster.client, job_id, cluster.headers, 120, cluster.logs)
    items = job["items"]
    assert items[0]["status"] == "failed", (items[0], cluster.logs())
    assert items[0]["error"]["code"] == "worker_lost"
    row = (await cluster.items(job_id))[0]
    assert kills == attempts and row.lost == attempts, (kills, row.lost, cluster.logs())
    assert [i["status"] for i in items[1:]] == ["done"] * 3
    stored = await cluster.scalar(select(func.count(Analysis.id)).where(Analysis.job_id == job_id))
    assert stored == 3
    assert not cluster.runtime.store.leftovers()
