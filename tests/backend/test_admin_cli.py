"""`spondyscan admin grant|revoke EMAIL`: the only way to make an admin, on the app's database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from backend.cli import main
from backend.core.config import Settings
from backend.db.session import make_engine, make_sessionmaker
from backend.repositories import users as users_repo
from backend.runtime import Guards
from backend.schemas.auth import UserCreate
from backend.services import auth


async def _signup(url: str, email: str) -> None:
    settings = Settings(argon2_time_cost=1, argon2_memory_kib=8192)
    guards = Guards.from_settings(settings)
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            data = UserCreate(email=email, password="pass-word-1")
            await auth.signup(session, settings, guards, auth.Caller("127.0.0.1"), data)
    finally:
        guards.close()
        await engine.dispose()


async def _role(url: str, email: str) -> str | None:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            user = await users_repo.get_user_by_email(session, email)
            return None if user is None else user.role
    finally:
        await engine.dispose()


def test_grant_and_revoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    cmd = ["admin", "--database-url", url, "--data-dir", str(tmp_path)]
    # Unknown account: a one-line error, and the migrations have been applied on the way.
    assert main([*cmd, "grant", "eve@example.org"]) == 2
    assert "No account" in capsys.readouterr().err
    asyncio.run(_signup(url, "eve@example.org"))
    assert asyncio.run(_role(url, "eve@example.org")) == "user"
    assert main([*cmd, "grant", "Eve@Example.org"]) == 0
    assert "eve@example.org is now an admin" in capsys.readouterr().out
    assert asyncio.run(_role(url, "eve@example.org")) == "admin"
    assert main([*cmd, "revoke", "eve@example.org"]) == 0
    assert asyncio.run(_role(url, "eve@example.org")) == "user"
