"""Helpers shared by the API tests (imported by name; conftest modules are not importable)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Uuid, func, select

from backend.core.config import Settings
from backend.runtime import Runtime

PG_ADMIN_URL = os.environ.get(
    "SPONDYSCAN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECRET = "test-secret-key-0123456789abcdef"


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class DatabaseUrls:
    """Create throwaway databases for a run and drop them afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.created: list[str] = []

    async def new(self, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite+aiosqlite:///{self.tmp / f'{uuid.uuid4().hex[:8]}.db'}"
        if not postgres_reachable():
            pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
        name = f"spondyscan_test_{uuid.uuid4().hex[:12]}"
        await pg_admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        return f"{base}/{name}"

    async def drop_all(self) -> None:
        for name in self.created:
            await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def make_settings(tmp: Path, database_url: str, models_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "secret_key": SECRET,
        "data_dir": tmp,
        "database_url": database_url,
        "models_dir": models_dir,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8192,
        "max_pixels": 2_000_000,
        "max_upload_bytes": 3 * 1024 * 1024,
        "faithfulness_steps": 4,
        # The tiny test models are cheap: score them coarse first anyway, to test that path.
        "faithfulness_coarse_first_gflops": 0.0,
        "batch_wait_ms": 15,
        # The suite's own process runs TensorFlow for many tests: keep TensorFlow's thread count
        # there (live servers and workers, each its own process, get the default setting).
        "inference_intra_op_threads": 0,
        "spa_dir": tmp / "no-spa",
        # The suite signs up and logs in many accounts from one address: abuse limits have
        # their own tests with tight settings.
        "signup_rate": "10000/minute",
        "login_rate_per_address": "10000/minute",
        "login_rate_per_account": "10000/minute",
        "max_concurrent_analyses": 64,
        "max_open_jobs": 100,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Env:
    app: Any
    client: httpx.AsyncClient
    runtime: Runtime
    settings: Settings
    backend: str

    async def count(self, model: Any, **where: Any) -> int:
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            column = getattr(model, key)
            if isinstance(value, str) and isinstance(column.type, Uuid):
                value = uuid.UUID(value)
            query = query.where(column == value)
        async with self.runtime.sessionmaker() as session:
            return int(await session.scalar(query) or 0)


async def signup_and_login(
    client: httpx.AsyncClient, email: str, password: str = "pass-word-1"
) -> dict[str, str]:
    r = await client.post("/auth/signup", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    r = await client.post("/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@asynccontextmanager
async def app_on_models(
    databases: DatabaseUrls,
    models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    add_models: Callable[[Path], None],
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """An app (SQLite) on a copy of the tiny bundles in ``models_dir`` to which ``add_models``
    adds or changes bundles; its client and the headers of a signed-in user ``name@...``."""
    import shutil

    from backend.main import create_app

    models = tmp_path_factory.mktemp(f"{name}-models")
    for bundle in models_dir.iterdir():
        shutil.copytree(bundle, models / bundle.name)
    add_models(models)
    url = await databases.new("sqlite")
    app = create_app(make_settings(tmp_path_factory.mktemp(name), url, models))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c, await signup_and_login(c, f"{name}@example.org")


async def login_or_signup(
    client: httpx.AsyncClient, email: str, password: str = "pass-word-1"
) -> dict[str, str]:
    """Headers for ``email``, signing it up only if this session's database lacks it yet."""
    r = await client.post("/auth/token", data={"username": email, "password": password})
    if r.status_code == 200:
        return {"Authorization": f"Bearer {r.json()['access_token']}"}
    return await signup_and_login(client, email, password)


async def set_role(env: Env, email: str, role: str) -> None:
    """Change a role the way `spondyscan admin grant|revoke` does."""
    from backend.services import auth

    async with env.runtime.sessionmaker() as session:
        await auth.set_role(session, email, role, actor="test")


async def admin_headers(env: Env, email: str = "admin@example.org") -> dict[str, str]:
    """Headers of an admin account (tokens carry no role: promoting after log-in is enough)."""
    headers = await login_or_signup(env.client, email)
    await set_role(env, email, "admin")
    return headers


async def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = 30.0, interval: float = 0.01
) -> None:
    """Poll ``condition`` until true (instead of sleeping a guessed time); fail after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
