"""The Celery application: broker settings and the one task, ``spondyscan.process_item``.

Delivery guarantees come from Celery and the store together:

* ``acks_late``: a task is acknowledged only after it ran, so a worker killed mid-item leaves
  its message unacknowledged and Redis delivers it again after ``job_visibility_timeout``
  (``reject_on_worker_lost`` does the same at once where a pool child dies);
* the item claim and the analysis id derived from (job, index) make any second delivery
  harmless: it finds the item finished, or running under a live lease (then it asks to be
  retried later), or its analysis already stored.

The API only publishes (``send_task`` by name); `spondyscan worker` builds this app around a
:class:`WorkerState` holding the process' warm models.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from backend.core.config import Settings

if TYPE_CHECKING:
    from backend.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")

TASK_NAME = "spondyscan.process_item"
# Longest wait between tries of an item whose store was unreachable.
MAX_BACKOFF_S = 30.0


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 4,
        "broker_transport_options": {
            "visibility_timeout": settings.job_visibility_timeout,
            "unacked_restore_interval": settings.job_restore_interval,
            # Scan for abandoned messages on every restore tick, not every tenth.
            "unacked_restore_throttle": 1,
        },
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_ignore_result": True,
        "task_default_queue": settings.job_queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        # One message at a time per worker thread: items spread evenly, and a killed worker
        # strands no more than it was running.
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": True,
        "task_publish_retry_policy": {
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    }


class WorkerState:
    """A worker process' runtime (database, artifact store, warm models) on its own event loop.

    Celery runs tasks on pool threads; they all hand their coroutine to this one loop, so
    concurrent items share the models and are batched together by the inference runner.
    """

    def __init__(self, settings: Settings, worker_id: str) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="spondyscan-loop", daemon=True
        )
        self.thread.start()
        self.runtime: Runtime | None = None

    @classmethod
    def start(cls, settings: Settings, worker_id: str, *, migrate: bool = False) -> WorkerState:
        state = cls(settings, worker_id)
        try:
            state.runtime = state.run(build_worker_runtime(settings, migrate=migrate))
        except BaseException:
            state.close()
            raise
        return state

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.runtime is not None:
            try:
                self.run(self.runtime.close(), timeout=30)
            except Exception:  # noqa: BLE001 - shutting down anyway
                log.warning("runtime did not close cleanly", exc_info=True)
            self.runtime = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


async def build_worker_runtime(settings: Settings, *, migrate: bool = False) -> Runtime:
    """The API's runtime (:func:`backend.runtime.start_runtime`) without its store sweep."""
    from backend.runtime import start_runtime

    runtime = await start_runtime(settings, migrate_db=migrate, sweep=False)
    if not runtime.models_ready:
        log.warning("no models loaded from %s: items will fail", settings.models_dir)
    return runtime


_state: WorkerState | None = None


def set_worker_state(state: WorkerState | None) -> None:
    global _state
    _state = state


def _process_item(task: Any, job_id: str, index: int) -> str:
    from backend.services.job_processing import process_item

    state = _state
    if state is None or state.runtime is None:
        raise RuntimeError("no spondyscan runtime here; start workers with `spondyscan worker`")
    runtime = state.runtime
    try:
        outcome = state.run(process_item(runtime, uuid.UUID(job_id), int(index), state.worker_id))
    except Exception as exc:
        # The database or the artifact folder is away: keep the item and try again later.
        countdown = min(MAX_BACKOFF_S, 2.0 ** min(task.request.retries, 5))
        log.warning("job item %s/%s: %s; retrying in %.0fs", job_id, index, exc, countdown)
        raise task.retry(exc=exc, countdown=countdown, max_retries=None) from exc
    if outcome.status == "retry":
        raise task.retry(countdown=outcome.retry_in, max_retries=None)
    log.info("job item %s/%s: %s %s", job_id, index, outcome.status, outcome.detail)
    return outcome.status


def make_celery(settings: Settings) -> Any:
    """A Celery app for these settings, with the item task registered."""
    from celery import Celery

    app = Celery("spondyscan", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.task(
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        max_retries=None,
    )(_process_item)
    return app


def __getattr__(name: str) -> Any:
    # `celery -A backend.worker.celery_app inspect ping` (the compose health check) finds the
    # app here, configured from the SPONDYSCAN_* environment.
    if name in ("app", "celery"):
        from backend.core.config import get_settings

        return make_celery(get_settings())
    raise AttributeError(name)
