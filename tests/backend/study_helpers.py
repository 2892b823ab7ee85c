"""Helpers for the study tests: an app with the shipped segmenter, series files, waiting."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import make_settings
from jobs_helpers import DEAD_BROKER

from backend.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
# The shipped default segmenter and the small default classifier: studies need a segmenter that
# finds the column (random weights would not), and the shipped domain reference.
SHIPPED = ("attention_unet_lite", "harmonized_ordinal")


def shipped_models(target: Path) -> Path:
    """A models folder with copies of the shipped default bundles and domain reference."""
    for key in SHIPPED:
        source = ROOT / "models" / key
        if not (source / "manifest.json").is_file():
            pytest.skip(f"the shipped bundle {key} is not in models/")
        shutil.copytree(source, target / key)
    shutil.copy2(ROOT / "models" / "domain_reference.npz", target / "domain_reference.npz")
    return target


def study_settings(tmp: Path, url: str, models_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "job_backend": "embedded",
        "broker_url": DEAD_BROKER,
        "job_concurrency": 2,
        "max_upload_bytes": 8 * 1024 * 1024,
        "study_max_instances": 100,
        "study_max_bytes": 64 * 1024 * 1024,
    }
    values.update(overrides)
    return make_settings(tmp, url, models_dir, **values)


@dataclass
class StudyEnv:
    app: Any
    client: httpx.AsyncClient
    settings: Settings
    alice: dict[str, str]
    bob: dict[str, str]

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    async def scalar(self, query: Any) -> Any:
        async with self.runtime.sessionmaker() as session:
            return await session.scalar(query)


def parts(files: list[tuple[str, bytes]], field: str = "files", **fields: Any) -> dict[str, Any]:
    """httpx keyword arguments for a multipart upload of files and form fields."""

    def text(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)

    data = {k: [text(x) for x in v] if isinstance(v, list) else text(v) for k, v in fields.items()}
    return {
        "files": [(field, (name, body, "application/octet-stream")) for name, body in files],
        "data": data,
    }


async def wait_study(
    client: httpx.AsyncClient, study_id: str, headers: dict[str, str], timeout: float = 180.0
) -> dict[str, Any]:
    """Poll until the study is done, failed or cancelled; return it."""
    deadline = time.monotonic() + timeout
    study: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await client.get(f"/studies/{study_id}", headers=headers)
        assert r.status_code == 200, r.text
        study = r.json()
        if study["status"] in ("done", "failed", "cancelled"):
            return study
        await asyncio.sleep(0.25)
    raise AssertionError(f"study {study_id} did not finish: {study.get('progress')}")
