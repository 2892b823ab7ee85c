"""Cold paths of our server: the first request right after /health/ready, and the first request
to each non-default model (loaded and warmed in the background), each against its own p50."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx

from bench.servers import Server

REPEATS = 4  # warm requests per model after its first one


async def _timed(client: httpx.AsyncClient, path: str, image: bytes, form: dict) -> float:
    t = time.perf_counter()
    r = await client.post(path, files={"file": ("x.png", image, "image/png")}, data=form)
    r.raise_for_status()
    return (time.perf_counter() - t) * 1000


async def first_after_ready(server: Server, image: bytes) -> dict[str, Any]:
    """What the web app sends (the default analysis), first right after ready, then warm."""
    async with httpx.AsyncClient(base_url=server.url, timeout=600, headers=server.headers) as c:
        first = await _timed(c, "/analyses", image, {})
        warm = [await _timed(c, "/analyses", image, {}) for _ in range(REPEATS)]
    p50 = statistics.median(warm)
    return {"first_ms": round(first, 1), "p50_ms": round(p50, 1), "ratio": round(first / p50, 2)}


async def first_per_model(server: Server, image: bytes) -> dict[str, Any]:
    """Each non-default classifier: its first /explain with a score, then REPEATS more; and
    whether it was still loading when the first was sent."""
    async with httpx.AsyncClient(base_url=server.url, timeout=600, headers=server.headers) as c:
        models = (await c.get("/models")).json()
        items = models["items"] if isinstance(models, dict) else models
        keys = [m["key"] for m in items if m["task"] == "classification" and not m["default"]]
        out: dict[str, Any] = {}
        for key in keys:
            loading = key in (await c.get("/health/ready")).json().get("loading", [])
            form = {"model": key, "allow_out_of_domain": "true"}
            first = await _timed(c, "/explain", image, form)
            warm = [await _timed(c, "/explain", image, form) for _ in range(REPEATS)]
            p50 = statistics.median(warm)
            out[key] = {
                "first_ms": round(first, 1),
                "p50_ms": round(p50, 1),
                "ratio": round(first / p50, 2),
                "was_loading": loading,
            }
            print(
                f"  ours   first /explain {key:<24} {first:8.1f} ms  p50 {p50:7.1f} ms", flush=True
            )
    return out


async def wait_all_loaded(server: Server, timeout_s: float = 600.0) -> float:
    """Seconds until /health/ready lists nothing as loading (the background warm-up is done)."""
    t = time.perf_counter()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
        while time.perf_counter() - t < timeout_s:
            if not (await c.get("/health/ready")).json().get("loading"):
                break
            await asyncio.sleep(0.25)
    return time.perf_counter() - t
