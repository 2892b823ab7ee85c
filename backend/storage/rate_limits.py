"""Rate-limit counters (the ``limits`` library): in memory, or in Redis shared by replicas.

``SPONDYSCAN_RATE_LIMIT_STORAGE`` is ``memory://`` (one process) or ``redis://host:port/db``
(every API replica counts against the same windows).
"""

from __future__ import annotations

import time

import limits
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string


class RateLimits:
    """Moving-window counters keyed by a rule name and identifiers (an address, an account)."""

    def __init__(self, uri: str) -> None:
        async_uri = uri if uri.startswith("async+") else f"async+{uri}"
        options = {"implementation": "redispy"} if "redis" in async_uri.split("://")[0] else {}
        self.storage = storage_from_string(async_uri, **options)
        self.strategy = MovingWindowRateLimiter(self.storage)

    async def hit(self, rule: str, *identifiers: str) -> float | None:
        """Count one event; None when it is within ``rule`` (e.g. "10/minute"), otherwise the
        seconds until the window lets one more through."""
        item = limits.parse(rule)
        if await self.strategy.hit(item, *identifiers):
            return None
        stats = await self.strategy.get_window_stats(item, *identifiers)
        return max(1.0, float(stats.reset_time) - time.time())

    async def clear(self, rule: str, *identifiers: str) -> None:
        await self.strategy.clear(limits.parse(rule), *identifiers)
