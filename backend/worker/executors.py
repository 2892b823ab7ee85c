"""The two job executors behind one interface (:class:`backend.services.jobs.JobExecutor`).

* ``embedded`` (default): asyncio tasks inside the API process, on the API's warm models. No
  extra service; one API process owns its jobs and picks them up again after a restart.
* ``celery``: each item is a Celery task on the Redis broker, run by `spondyscan worker`
  processes that hold their own warm models and share the database and artifact directory.

``SPONDYSCAN_JOB_BACKEND`` picks one. Both run an item through
:func:`backend.services.job_processing.process_item`, so results are the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from backend.core.config import Settings
from backend.repositories import jobs as jobs_repo
from backend.runtime import Runtime
from backend.services.housekeeping import housekeeping
from backend.services.job_intake import job_inputs
from backend.services.job_processing import ItemOutcome, process_item

log = logging.getLogger(__name__)


def process_name(prefix: str) -> str:
    """Who holds a claim: unique per process, readable in GET /jobs/{id} and the logs."""
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}"


class EmbeddedExecutor:
    """Items run as asyncio tasks in this process, ``settings.job_concurrency`` at a time."""

    name = "embedded"

    def __init__(self, runtime: Runtime, concurrency: int = 2) -> None:
        self.runtime = runtime
        self.concurrency = max(1, int(concurrency))
        self.worker_id = process_name("embedded")
        self.queue: asyncio.Queue[tuple[uuid.UUID, int]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self.outcomes: dict[str, int] = {}

    async def start(self) -> None:
        """Resume this back end's unfinished items (left by a previous run of the API)."""
        async with self.runtime.sessionmaker() as session:
            # Only one process runs embedded jobs: whatever it held before is a dead worker's.
            now = await jobs_repo.database_now(session)
            await jobs_repo.expire_leases(session, self.name, now)
            pending = await jobs_repo.open_items_for_backend(session, self.name)
            await session.commit()
        for job_id, index in pending:
            self.queue.put_nowait((job_id, index))
        if pending:
            log.info("resuming %d unfinished job items", len(pending))
        await asyncio.to_thread(job_inputs(self.runtime.settings).sweep)
        self._tasks = [
            asyncio.create_task(self._consume(), name=f"job-worker-{n}")
            for n in range(self.concurrency)
        ]

    async def submit(self, job_id: uuid.UUID, indexes: list[int]) -> None:
        for index in indexes:
            self.queue.put_nowait((job_id, index))

    def _later(self, delay: float, job_id: uuid.UUID, index: int) -> None:
        loop = asyncio.get_running_loop()

        def put() -> None:
            self._timers.discard(handle)
            self.queue.put_nowait((job_id, index))

        handle = loop.call_later(delay, put)
        self._timers.add(handle)

    async def _consume(self) -> None:
        while True:
            job_id, index = await self.queue.get()
            try:
                outcome = await process_item(self.runtime, job_id, index, self.worker_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be away: try the item again
                log.exception("job item %s/%s: will retry", job_id, index)
                outcome = ItemOutcome("retry", retry_in=5.0)
            finally:
                self.queue.task_done()
            self.outcomes[outcome.status] = self.outcomes.get(outcome.status, 0) + 1
            if outcome.status == "retry":
                self._later(outcome.retry_in, job_id, index)

    async def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


class CeleryExecutor:
    """Items are published as Celery tasks; `spondyscan worker` processes run them."""

    name = "celery"

    def __init__(self, settings: Settings) -> None:
        from backend.worker.celery_app import make_celery

        self.settings = settings
        self.app = make_celery(settings)

    async def start(self) -> None:
        return None

    def _publish(self, job_id: str, indexes: list[int]) -> None:
        from backend.worker.celery_app import TASK_NAME

        with self.app.producer_or_acquire() as producer:
            for index in indexes:
                self.app.send_task(
                    TASK_NAME,
                    args=[job_id, index],
                    queue=self.settings.job_queue,
                    producer=producer,
                )

    async def submit(self, job_id: uuid.UUID, indexes: list[int]) -> None:
        # kombu publishes synchronously; keep the network round trips off the event loop.
        await asyncio.to_thread(self._publish, str(job_id), indexes)

    async def close(self) -> None:
        await asyncio.to_thread(self.app.close)


async def start_executor(runtime: Runtime) -> EmbeddedExecutor | CeleryExecutor:
    """The executor the settings ask for, started."""
    settings: Settings = runtime.settings
    executor: EmbeddedExecutor | CeleryExecutor
    if settings.job_backend == "celery":
        executor = CeleryExecutor(settings)
    else:
        executor = EmbeddedExecutor(runtime, settings.job_concurrency)
    await executor.start()
    log.info("batch jobs run on the %s back end", executor.name)
    return executor


async def _housekeeping_forever(runtime: Runtime) -> None:
    """Clear what crashed processes left (services.housekeeping): now, then once a lease."""
    while True:
        try:
            closed, orphans = await housekeeping(runtime)
        except Exception:  # noqa: BLE001 - the database may be away for a moment: next round
            log.warning("housekeeping failed; trying again later", exc_info=True)
        else:
            if closed:
                log.info("closed %d cancelled jobs whose last items lost their workers", closed)
        await asyncio.sleep(runtime.settings.job_lease_seconds)


@asynccontextmanager
async def running_executor(runtime: Runtime) -> AsyncIterator[EmbeddedExecutor | CeleryExecutor]:
    """The configured executor (and the reaper of cancelled jobs), started for the life of
    the block and stopped after it."""
    executor = await start_executor(runtime)
    reaper = asyncio.create_task(_housekeeping_forever(runtime), name="housekeeping")
    try:
        yield executor
    finally:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await executor.close()
