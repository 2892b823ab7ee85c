"""A small, bounded thread pool for blocking work that must not crowd out everything else.

Password hashing (argon2, tens of MiB each) and image decoding each get their own: a flood of
log-ins cannot take the threads decoding uploads need, and when a pool's queue is full the
request is refused at once (503 with ``Retry-After``) instead of waiting in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from backend.core.errors import ServiceBusy

T = TypeVar("T")


class BoundedPool:
    """``workers`` threads and at most ``queue`` calls waiting for one."""

    def __init__(self, name: str, workers: int, queue: int, *, busy_message: str) -> None:
        self.name = name
        self.capacity = workers + queue
        self.busy_message = busy_message
        self.pending = 0
        self.rejected = 0
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the pool; ServiceBusy when ``capacity`` calls are already in it."""
        if self.pending >= self.capacity:
            self.rejected += 1
            raise ServiceBusy(self.busy_message, retry_after=1)
        self.pending += 1
        loop = asyncio.get_running_loop()

        def release(_: object) -> None:
            # Counted until the thread is done, not until the awaiting request gives up:
            # a cancelled call still occupies its thread.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._release)

        future = self._executor.submit(functools.partial(fn, *args, **kwargs))
        future.add_done_callback(release)
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        self.pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class PerKeyLimit:
    """At most ``limit`` things at once per key (e.g. analyses per user) in this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: dict[object, int] = {}

    @contextlib.contextmanager
    def hold(self, key: object, refuse: Callable[[], Exception]) -> Any:
        """Count one for ``key`` while the block runs; raise ``refuse()`` when at the limit."""
        if self.active.get(key, 0) >= self.limit:
            raise refuse()
        self.active[key] = self.active.get(key, 0) + 1
        try:
            yield
        finally:
            self.active[key] -= 1
            if not self.active[key]:
                del self.active[key]
