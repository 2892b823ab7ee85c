"""Migrations upgrade and downgrade cleanly on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from api_helpers import BACKENDS, DatabaseUrls
from sqlalchemy import inspect

from backend.db import migrate
from backend.db.session import make_engine

TABLES = {"users", "api_keys", "analyses", "model_results", "audit_events"}


async def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_upgrade_downgrade_upgrade(backend: str, databases: DatabaseUrls) -> None:
    url = await databases.new(backend)
    await asyncio.to_thread(migrate.upgrade, url)
    assert await _tables(url) >= TABLES
    # The schema the migrations build is exactly the one the models describe.
    await asyncio.to_thread(command.check, migrate.alembic_config(url))
    await asyncio.to_thread(migrate.downgrade, url, "base")
    assert await _tables(url) - {"alembic_version"} == set()
    await asyncio.to_thread(migrate.upgrade, url)
    assert await _tables(url) >= TABLES
    # Applying again (every start-up does) is a no-op.
    await asyncio.to_thread(migrate.upgrade, url)


def test_revision_files_are_dated() -> None:
    import re

    versions = migrate.MIGRATIONS_DIR / "versions"
    names = [p.name for p in versions.glob("*.py")]
    assert names and all(re.match(r"^\d{8}_[a-z0-9_]+\.py$", n) for n in names), names
    assert len(migrate.current_heads()) == 1


def _imported(path: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_migrations_import_only_the_database_layer() -> None:
    # The migrations are not a package, so the import contracts in pyproject.toml cannot see
    # them: this is their contract. Of the service they know the tables and the declarative base.
    import sys

    allowed_backend = {"backend.db.base", "backend.models"}
    files = [migrate.MIGRATIONS_DIR / "env.py", *(migrate.MIGRATIONS_DIR / "versions").glob("*.py")]
    seen: set[str] = set()
    for path in files:
        for name in _imported(path):
            seen.add(name)
            top = name.split(".")[0]
            if top == "backend":
                assert name in allowed_backend or name.startswith("backend.models."), (path, name)
            else:
                assert top in {"alembic", "sqlalchemy", "__future__"} or (
                    top in sys.stdlib_module_names
                ), (path, name)
    assert {"backend.db.base", "backend.models", "alembic"} <= seen  # the walk did find imports
