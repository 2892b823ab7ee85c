"""Floods against a live API process: huge bodies before authentication, and 16 clients
sending maximum-size uploads, bombs and ordinary analyses at once. No 5xx, memory bounded,
healthy afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from pathlib import Path

import api_samples
import httpx
import pytest
from live_api import LiveApi, tiny_models

from tests.hostile import corpus

# Timing-sensitive (windows, waits, processes started or killed): `make test` runs it alone.
pytestmark = pytest.mark.serial

CLIENTS = 16
FLOOD_SECONDS = 20.0
MAX_UPLOAD = 8 * 1024**2
# Stated bound (README, Security): the server's resident memory may grow by at most this much
# above its idle size under the flood, whatever the clients send.
FLOOD_RSS_GROWTH_MIB = 500


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    tmp = tmp_path_factory.mktemp("flood")
    server = LiveApi(
        tmp,
        tiny_models(tmp / "models"),
        max_upload_bytes=MAX_UPLOAD,
        max_decoded_bytes=64 * 1024**2,
        signup_rate="1000/minute",
        login_rate_per_address="1000/minute",
    ).start()
    try:
        yield server
    finally:
        server.stop()


class RssWatch:
    """Samples the server's resident memory every 50 ms while the block runs."""

    def __init__(self, api: LiveApi) -> None:
        self.api = api
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.api.rss_mib())
            time.sleep(0.05)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _complete(reply: bytes) -> bool:
    """A whole HTTP response: its head, and as many body bytes as Content-Length says."""
    head, sep, body = reply.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return True


def test_the_server_runs_tensorflow_with_its_configured_threads(api: LiveApi) -> None:
    """A fresh server process applies inference_intra_op_threads (default 1) before its first
    model loads; TensorFlow reports the count it runs with."""
    ready = httpx.get(f"{api.base}/health/ready").json()
    assert ready["inference"]["intra_op_threads"] == 1, ready


def test_huge_unauthenticated_body_is_refused_at_once(api: LiveApi) -> None:
    """400 MB declared on /auth/signup, no credentials: 413 within a second, memory flat."""
    before = api.rss_mib()
    with RssWatch(api) as watch, socket.create_connection(("127.0.0.1", api.port)) as sock:
        started = time.perf_counter()
        head = (
            f"POST /auth/signup HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {400 * 1024**2}\r\n\r\n"
        )
        sock.sendall(head.encode())
        sock.settimeout(0.05)
        chunk = b"{" * 65536
        reply = b""
        # Keep sending, as a client with 400 MB would, until the server answers.
        while not _complete(reply) and time.perf_counter() - started < 5:
            # The server may close the connection once it has answered.
            with contextlib.suppress(OSError):
                sock.sendall(chunk)
            try:
                reply += sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                break
        elapsed = time.perf_counter() - started
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"code": "too_large"' in reply or b'"code":"too_large"' in reply
    assert elapsed < 1.0, elapsed
    assert watch.peak - before < 50, (before, watch.peak)


async def _one_client(
    api: LiveApi, headers: dict[str, str], seed: int, until: float, seen: list[int]
) -> None:
    rng = random.Random(seed)
    hostile = corpus(max_decoded_mib=64)
    junk = rng.randbytes(MAX_UPLOAD - 4096)  # the largest upload the server accepts
    slice_png = api_samples.phantom_png(seed)
    async with httpx.AsyncClient(base_url=api.base, timeout=120) as client:
        while time.monotonic() < until:
            kind = rng.random()
            if kind < 0.3:
                r = await client.post(
                    "/classify", files={"file": ("junk.bin", junk)}, headers=headers
                )
            elif kind < 0.6:
                item = rng.choice(hostile)
                r = await client.post(
                    "/analyses", files={"file": (item.name, item.data)}, headers=headers
                )
            elif kind < 0.8:
                r = await client.post(
                    "/analyses", files={"file": ("s.png", slice_png)}, headers=headers
                )
            else:
                # Over the limit: the server may answer 413 and close before the client has
                # sent it all, which a client can see as a dropped connection instead.
                path, body = (
                    ("/auth/signup", {"content": b"x" * 200_000})
                    if kind < 0.9
                    else ("/segment", {"files": {"file": ("big", junk + b"\0" * 600_000)}})
                )
                try:
                    r = await client.post(path, **body)  # type: ignore[arg-type]
                except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                    seen.append(413)
                    continue
            seen.append(r.status_code)


def test_flood_of_max_size_uploads_and_bombs(api: LiveApi) -> None:
    tokens = [api.token(f"flood{n}@example.org") for n in range(4)]
    idle = api.rss_mib()
    seen: list[int] = []

    async def flood() -> None:
        until = time.monotonic() + FLOOD_SECONDS
        await asyncio.gather(
            *(
                _one_client(
                    api, {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}, n, until, seen
                )
                for n in range(CLIENTS)
            )
        )

    with RssWatch(api) as watch:
        asyncio.run(flood())
    server_errors = [s for s in seen if s >= 500]
    assert seen and not server_errors, (sorted(set(seen)), api.log_tail())
    assert {200, 413, 415} <= set(seen), sorted(set(seen))
    growth = watch.peak - idle
    assert growth < FLOOD_RSS_GROWTH_MIB, (idle, watch.peak)
    # Healthy afterwards: ready, and an ordinary analysis works.
    assert httpx.get(f"{api.base}/health/ready").status_code == 200
    headers = {"Authorization": f"Bearer {tokens[0]}"}
    r = httpx.post(
        f"{api.base}/analyses",
        files={"file": ("s.png", api_samples.phantom_png(99))},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    root = Path(api.data_dir) / "artifacts"
    assert not [*(root / ".staging").iterdir(), *(root / ".trash").iterdir()]
    print(f"flood: {len(seen)} requests, statuses {sorted(set(seen))}, RSS {idle:.0f} -> "
          f"{watch.peak:.0f} MiB")  # fmt: skip
