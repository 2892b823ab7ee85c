"""A micro-batcher: gathers concurrent requests into one model call, run off the event loop.

Requests wait in a bounded queue. A collector task takes the first waiting request and
everything already waiting behind it. When the model's thread is idle (a
:class:`ModelExecutor` says so) that batch runs at once: waiting could only add latency, and
requests that arrive while it runs are batched together next. When the thread is busy it keeps
gathering until the batch is full or ``max_wait_ms`` has passed (the batch would queue behind
the running one anyway). Each caller gets its own row of the result. A full queue is refused
at once (:class:`QueueFull`) rather than letting memory grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class QueueFull(Exception):
    """The batcher's queue is at capacity."""


@dataclass
class BatcherStats:
    requests: int = 0  # items accepted
    calls: int = 0  # times the batch function ran
    rejected: int = 0  # items refused because the queue was full
    largest_batch: int = 0
    busy_seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class ModelExecutor(ThreadPoolExecutor):
    """One model's worker thread that knows whether it has work queued or running."""

    def __init__(self, thread_name_prefix: str) -> None:
        super().__init__(max_workers=1, thread_name_prefix=thread_name_prefix)
        self._pending = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self._pending += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    @property
    def idle(self) -> bool:
        """Nothing submitted is waiting or running."""
        return self._pending == 0


class MicroBatcher(Generic[In, Out]):
    """Batch calls to ``fn(items) -> results`` (same length, same order) in ``executor``."""

    def __init__(
        self,
        name: str,
        fn: Callable[[Sequence[In]], Sequence[Out]],
        executor: Executor,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 4.0,
        queue_size: int = 64,
    ) -> None:
        self.name = name
        self.fn = fn
        self.executor = executor
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.queue_size = max(1, int(queue_size))
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[tuple[In, asyncio.Future[Out]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def _ensure_started(self) -> asyncio.Queue[tuple[In, asyncio.Future[Out]]]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._task is None or self._task.done():
            # (Re)start on the current loop: test suites and job workers may run several loops.
            self._loop = loop
            self._queue = asyncio.Queue(maxsize=self.queue_size)
            self._task = loop.create_task(self._collect(), name=f"batcher:{self.name}")
        return self._queue

    async def submit(self, item: In) -> Out:
        """Queue one item and wait for its result; raises QueueFull at capacity."""
        queue = self._ensure_started()
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        try:
            queue.put_nowait((item, future))
        except asyncio.QueueFull:
            self.stats.rejected += 1
            raise QueueFull(self.name) from None
        self.stats.requests += 1
        return await future

    async def _collect(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            # An idle model thread runs what is here now; a busy one lets the batch grow.
            idle = bool(getattr(self.executor, "idle", False))
            deadline = loop.time() + (0.0 if idle else self.max_wait)
            while len(batch) < self.max_batch:
                # Take whatever is already waiting without sleeping, then wait out the window.
                try:
                    batch.append(queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            await self._run(live)

    async def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        items = [item for item, _ in batch]
        self.stats.calls += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(items))
        if len(self.stats.batch_sizes) < 10_000:
            self.stats.batch_sizes.append(len(items))
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.fn, items
            )
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
        except Exception as exc:  # noqa: BLE001 - the error belongs to each waiting caller
            log.exception("batch %s failed", self.name)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        finally:
            self.stats.busy_seconds += time.perf_counter() - started
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._task
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.cancel()
        self._task = None
        self._queue = None

    def as_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "requests": s.requests,
            "calls": s.calls,
            "rejected": s.rejected,
            "largest_batch": s.largest_batch,
            "queued": self.queued,
            "busy_seconds": round(s.busy_seconds, 4),
        }
