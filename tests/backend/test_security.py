"""Hostile input, abuse limits and auth hardening, against the real app (SQLite).

Each test builds an app with the tight limit it checks; the shared suites keep generous ones.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import api_samples
import httpx
import pytest
from api_helpers import SECRET, make_settings, signup_and_login

from backend.core import security
from backend.core.config import Settings
from backend.core.errors import ServiceBusy
from backend.core.pools import BoundedPool, PerKeyLimit
from tests.hostile import corpus

# Timing-sensitive (windows, waits, processes started or killed): `make test` runs it alone.
pytestmark = pytest.mark.serial

Factory = Callable[..., Any]


@pytest.fixture
def app_with(tmp_path: Path, models_dir: Path) -> Callable[..., Any]:
    """``async with app_with(**settings) as (client, app):`` a fresh app and database."""

    @asynccontextmanager
    async def make(
        base_url: str = "http://127.0.0.1", **overrides: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
        from backend.main import create_app

        data = tmp_path / uuid.uuid4().hex[:8]
        url = f"sqlite+aiosqlite:///{data / 'db.sqlite'}"
        settings = make_settings(data, url, models_dir, **overrides)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
                yield client, app

    return make


# ----------------------------------------------------------------------------- bodies


async def test_oversized_bodies_are_refused_before_parsing_or_auth(app_with: Factory) -> None:
    async with app_with(max_request_bytes=4096, max_upload_bytes=64 * 1024) as (client, _):
        # Declared too large: refused without reading it, whatever the credentials.
        r = await client.post(
            "/auth/signup", content=b"{" * 10_000, headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and r.json()["code"] == "too_large"
        assert "4 KiB" in r.json()["message"]

        # Streamed without a length: refused once the bytes cross the limit.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"x" * 1024

        form = {"content-type": "application/x-www-form-urlencoded"}
        r = await client.post("/auth/token", content=chunks(), headers=form)
        assert r.status_code == 413 and r.json()["code"] == "too_large"
        # Image routes have the upload limit (plus room for the form), not the JSON one.
        files = {"file": ("s.png", api_samples.phantom_png())}
        r = await client.post("/analyses", files=files)
        assert r.status_code == 401  # read in full, then the credentials are checked
        big = {"file": ("s.png", b"\x89PNG" + b"0" * (2 * 1024 * 1024))}
        r = await client.post("/analyses", files=big)
        assert r.status_code == 413 and r.json()["code"] == "too_large"


async def test_body_limit_reads_almost_nothing_of_a_huge_declared_body(
    app_with: Factory,
) -> None:
    """A raw ASGI request declaring 400 MB: the app answers 413 after reading at most one
    chunk, so neither memory nor time depends on what the client claims to send."""
    async with app_with() as (_, app):
        sent: list[dict[str, Any]] = []
        pulled = 0

        async def receive() -> dict[str, Any]:
            nonlocal pulled
            pulled += 1
            return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "path": "/auth/signup",
            "raw_path": b"/auth/signup",
            "query_string": b"",
            "root_path": "",
            "scheme": "http",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"content-length", str(400 * 1024**2).encode()),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        started = time.perf_counter()
        await app(scope, receive, send)
        assert time.perf_counter() - started < 1.0
        assert sent[0]["status"] == 413 and pulled <= 1


async def test_form_limits(app_with: Factory) -> None:
    async with app_with() as (client, _):
        headers = await signup_and_login(client, "forms@example.org")
        png = api_samples.phantom_png()
        files = [("file", ("a.png", png)), ("file", ("b.png", png))]
        r = await client.post("/segment", files=files, headers=headers)
        assert r.status_code == 413 and r.json()["code"] == "too_many_files"
        fields = {f"f{i}": "x" for i in range(5)}
        r = await client.post("/segment", files=files[:1], data=fields, headers=headers)
        assert r.status_code != 413, r.text  # five fields are within the default 64
    # The field counts are settings (house rule 13): four fields is one too many here.
    async with app_with(upload_form_max_fields=4, form_max_fields=2) as (client, _):
        headers = await signup_and_login(client, "forms2@example.org")
        r = await client.post("/segment", files=files[:1], data=fields, headers=headers)
        assert r.status_code == 413 and r.json()["code"] == "too_many_fields"
        r = await client.post(
            "/auth/token", data={"username": "a@example.org", "password": "x", "extra": "y"}
        )
        assert r.status_code == 413 and r.json()["code"] == "too_many_fields"


# ----------------------------------------------------------------------------- decoders


async def test_hostile_uploads_get_their_codes(app_with: Factory) -> None:
    items = corpus(max_decoded_mib=16)
    async with app_with(max_decoded_bytes=16 * 1024**2, max_upload_bytes=8 * 1024**2) as (
        client,
        app,
    ):
        headers = await signup_and_login(client, "hostile@example.org")
        for item in items:
            files = {"file": (item.name, item.data)}
            r = await client.post("/classify", files=files, headers=headers)
            assert (r.status_code, r.json()["code"]) == (item.status, item.code), item.name
        store = app.state.runtime.store
        assert store.count_dirs() == 0 and not store.leftovers()


# ----------------------------------------------------------------------------- output


async def test_security_headers_and_odd_paths(app_with: Factory) -> None:
    async with app_with() as (client, _):
        r = await client.get("/health/live")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        page = await client.get("/app/")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for odd in ("/%00", "/app/%00", "/history/%00", "/artifacts/%00/x", "/jobs/%ff"):
            r = await client.get(odd)
            assert 400 <= r.status_code < 500, odd
            assert r.headers["content-type"].startswith("application/json"), odd
        headers = await signup_and_login(client, "odd@example.org")
        for path in ("/history", "/jobs"):
            r = await client.get(
                path, params={"offset": "9003679689290183134412800"}, headers=headers
            )
            assert r.status_code == 422, path
        r = await client.get("/history", params={"date_to": "0.5"}, headers=headers)
        assert r.status_code == 422
        r = await client.get("/history", params={"date_to": "2026-11-30"}, headers=headers)
        assert r.status_code == 200


def test_csv_cells_cannot_become_formulas() -> None:
    from backend.services.job_export import safe_cell

    for text in ('=HYPERLINK("x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"):
        assert safe_cell(text) == "'" + text
    assert safe_cell("scan-01.png") == "scan-01.png"
    assert safe_cell(-0.5) == -0.5 and safe_cell(3) == 3


# ----------------------------------------------------------------------------- auth


async def test_api_keys_cannot_manage_keys_or_sessions(app_with: Factory) -> None:
    async with app_with() as (client, _):
        headers = await signup_and_login(client, "keys@example.org")
        key = (await client.post("/auth/api-keys", json={"name": "bridge"}, headers=headers)).json()
        with_key = {"X-API-Key": key["key"]}
        assert (await client.get("/auth/me", headers=with_key)).status_code == 200
        for method, path, body in (
            ("POST", "/auth/api-keys", {"name": "successor"}),
            ("GET", "/auth/api-keys", None),
            ("DELETE", f"/auth/api-keys/{key['id']}", None),
            ("POST", "/auth/logout", None),
            ("POST", "/auth/password", {"current_password": "x", "new_password": "y" * 10}),
        ):
            r = await client.request(method, path, json=body, headers=with_key)
            assert r.status_code == 403 and r.json()["code"] == "api_key_not_allowed", path
        # The key still works: nothing was minted or revoked by it.
        keys = (await client.get("/auth/api-keys", headers=headers)).json()
        assert [k["name"] for k in keys] == ["bridge"] and keys[0]["active"]


async def test_logout_and_password_change_revoke_earlier_tokens(app_with: Factory) -> None:
    async with app_with() as (client, _):
        first = await signup_and_login(client, "rev@example.org")
        second = await signup_and_login_again(client, "rev@example.org")
        r = await client.post("/auth/logout", headers=first)
        assert r.status_code == 204
        for headers in (first, second):
            r = await client.get("/auth/me", headers=headers)
            assert r.status_code == 401 and r.json()["code"] == "token_revoked"
        third = await signup_and_login_again(client, "rev@example.org")
        body = {"current_password": "wrong-one", "new_password": "another pass phrase"}
        r = await client.post("/auth/password", json=body, headers=third)
        assert r.status_code == 403 and r.json()["code"] == "invalid_current_password"
        body["current_password"] = "pass-word-1"
        r = await client.post("/auth/password", json=body, headers=third)
        assert r.status_code == 200
        fresh = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert (await client.get("/auth/me", headers=third)).json()["code"] == "token_revoked"
        assert (await client.get("/auth/me", headers=fresh)).status_code == 200
        r = await client.post(
            "/auth/token", data={"username": "rev@example.org", "password": "pass-word-1"}
        )
        assert r.status_code == 401
        assert await signup_and_login_again(client, "rev@example.org", "another pass phrase")


async def signup_and_login_again(
    client: httpx.AsyncClient, email: str, password: str = "pass-word-1"
) -> dict[str, str]:
    r = await client.post("/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_tokens_carry_and_check_issuer_and_audience(app_with: Factory) -> None:
    async with app_with() as (client, _):
        await signup_and_login(client, "aud@example.org")
        me = await signup_and_login_again(client, "aud@example.org")
        user_id = (await client.get("/auth/me", headers=me)).json()["id"]
        for claims in ({"audience": "another-service"}, {"issuer": "someone-else"}):
            token, _ = security.create_access_token(uuid.UUID(user_id), SECRET, 5, **claims)
            r = await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401 and r.json()["code"] == "invalid_token", claims
        good, _ = security.create_access_token(uuid.UUID(user_id), SECRET, 5)
        r = await client.get("/auth/me", headers={"Authorization": f"Bearer {good}"})
        assert r.status_code == 200


async def test_signup_and_login_rate_limits(app_with: Factory) -> None:
    async with app_with(
        signup_rate="3/minute",
        login_rate_per_address="4/minute",
        login_rate_per_account="50/minute",
    ) as (client, _):
        for n in range(3):
            body = {"email": f"r{n}@example.org", "password": "pass-word-1"}
            assert (await client.post("/auth/signup", json=body)).status_code == 201
        body = {"email": "r9@example.org", "password": "pass-word-1"}
        r = await client.post("/auth/signup", json=body)
        assert r.status_code == 429 and r.json()["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        wrong = {"username": "r0@example.org", "password": "no"}
        for _ in range(4):
            assert (await client.post("/auth/token", data=wrong)).status_code == 401
        r = await client.post("/auth/token", data=wrong)
        assert r.status_code == 429 and r.json()["code"] == "rate_limited"


async def test_failed_logins_lock_the_account_with_backoff(app_with: Factory) -> None:
    async with app_with(lockout_failures=3, lockout_seconds=60) as (client, app):
        await signup_and_login(client, "lock@example.org")
        wrong = {"username": "lock@example.org", "password": "not-it"}
        for _ in range(3):
            assert (await client.post("/auth/token", data=wrong)).status_code == 401
        right = {"username": "lock@example.org", "password": "pass-word-1"}
        r = await client.post("/auth/token", data=right)
        assert r.status_code == 429 and r.json()["code"] == "account_locked"
        assert 50 <= int(r.headers["retry-after"]) <= 60
        # Pretend the minute passed; one more failure locks for twice as long.
        await _unlock(app, "lock@example.org")
        assert (await client.post("/auth/token", data=wrong)).status_code == 401
        r = await client.post("/auth/token", data=right)
        assert r.status_code == 429 and 100 <= int(r.headers["retry-after"]) <= 120
        await _unlock(app, "lock@example.org")
        assert (await client.post("/auth/token", data=right)).status_code == 200


async def _unlock(app: Any, email: str) -> None:
    from backend.repositories import users as users_repo

    async with app.state.runtime.sessionmaker() as session:
        user = await users_repo.get_user_by_email(session, email)
        user.locked_until = datetime.now(UTC) - timedelta(seconds=1)
        await session.commit()


async def test_default_secret_is_refused_beyond_loopback(app_with: Factory) -> None:
    from backend.core.config import DEFAULT_SECRET

    dev = {"environment": "development", "secret_key": DEFAULT_SECRET}
    async with app_with(base_url="http://10.1.2.3", **dev) as (client, _):
        r = await client.get("/health/live")
        assert r.status_code == 503 and r.json()["code"] == "insecure_configuration"
    async with app_with(**dev) as (client, _):
        assert (await client.get("/health/live")).status_code == 200
    async with app_with(base_url="http://10.1.2.3") as (client, _):  # a private secret
        assert (await client.get("/health/live")).status_code == 200


# ----------------------------------------------------------------------------- quotas


async def test_analyses_in_flight_per_user(app_with: Factory) -> None:
    async with app_with(max_concurrent_analyses=1) as (client, app):
        headers = await signup_and_login(client, "busy@example.org")
        me = (await client.get("/auth/me", headers=headers)).json()
        files = {"file": ("s.png", api_samples.phantom_png())}
        guards = app.state.runtime.guards
        with guards.analyses.hold(uuid.UUID(me["id"]), lambda: AssertionError("free slot")):
            r = await client.post("/classify", files=files, headers=headers)
            assert r.status_code == 429 and r.json()["code"] == "too_many_analyses"
            assert "retry-after" in r.headers
        assert (await client.post("/classify", files=files, headers=headers)).status_code == 200


async def test_storage_quota(app_with: Factory) -> None:
    async with app_with(storage_quota_bytes=250_000) as (client, app):
        headers = await signup_and_login(client, "quota@example.org")
        files = {"file": ("s.png", api_samples.phantom_png())}
        first = await client.post("/segment", files=files, headers=headers)
        assert first.status_code == 200
        refused = None
        for _ in range(20):
            r = await client.post("/segment", files=files, headers=headers)
            if r.status_code != 200:
                refused = r
                break
        assert refused is not None and refused.status_code == 413
        assert refused.json()["code"] == "storage_quota_exceeded"
        # Deleting frees it again.
        await client.delete(f"/history/{first.json()['id']}", headers=headers)
        assert (await client.post("/segment", files=files, headers=headers)).status_code == 200
        assert not app.state.runtime.store.leftovers()


async def test_open_jobs_per_user(app_with: Factory) -> None:
    from backend.db.base import utcnow
    from backend.models import Job

    async with app_with(max_open_jobs=1) as (client, app):
        headers = await signup_and_login(client, "jobs@example.org")
        me = (await client.get("/auth/me", headers=headers)).json()
        async with app.state.runtime.sessionmaker() as session:
            session.add(
                Job(
                    id=uuid.uuid4(),
                    user_id=uuid.UUID(me["id"]),
                    status="running",
                    backend="embedded",
                    options={"models": []},
                    total=1,
                    created_at=utcnow(),
                )
            )
            await session.commit()
        files = [("files", ("a.png", api_samples.phantom_png()))]
        r = await client.post("/jobs", files=files, headers=headers)
        assert r.status_code == 429 and r.json()["code"] == "too_many_jobs"


async def test_bounded_pools() -> None:
    pool = BoundedPool("t", 1, 1, busy_message="busy")
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait() -> None:
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(5)

    running = [asyncio.create_task(pool.run(wait)) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(ServiceBusy):
        await pool.run(lambda: None)
    gate.set()
    await asyncio.gather(*running)
    assert await pool.run(lambda: 7) == 7
    pool.close()
    limit = PerKeyLimit(1)
    with (
        limit.hold("u", lambda: RuntimeError("full")),
        pytest.raises(RuntimeError),
        limit.hold("u", lambda: RuntimeError("full")),
    ):
        pass
    with limit.hold("u", lambda: RuntimeError("full")):
        assert limit.active == {"u": 1}


def test_settings_are_the_limits() -> None:
    s = Settings(secret_key=SECRET)
    assert s.max_request_bytes < s.max_upload_bytes < s.job_max_bytes
    assert s.job_max_attempts >= 1 and s.lockout_failures >= 1
