"""Uploads that break a decoder in unusual ways get a 4xx with a code, never a 500 or a result.

One app (SQLite, embedded jobs) serves the module, each test as its own user; the files come from
tests/ml/test_io_hostile.py, where the decoder answers for them directly.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import api_samples
import httpx
import numpy as np
import pytest
from api_helpers import make_settings, signup_and_login
from jobs_helpers import multipart, wait_job

from tests.ml.test_io_hostile import MALFORMED, mr_dicom

Served = tuple[httpx.AsyncClient, Any]
ROUTES = ("/segment", "/classify", "/explain", "/analyses")


@pytest.fixture(scope="module")
async def served(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> AsyncIterator[Served]:
    """A client of a fresh app and database (starting one takes seconds: the module shares it)."""
    from backend.main import create_app

    data = tmp_path_factory.mktemp("hostile-decoding")
    url = f"sqlite+aiosqlite:///{data / 'db.sqlite'}"
    settings = make_settings(
        data, url, models_dir, job_backend="embedded", broker_url="redis://127.0.0.1:1/0"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client, app


async def _user(client: httpx.AsyncClient) -> dict[str, str]:
    return await signup_and_login(client, f"{uuid.uuid4().hex[:10]}@example.org")


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _assert_refused(r: httpx.Response, status: int, code: str, what: str) -> None:
    assert (r.status_code, r.json()["code"]) == (status, code), (what, r.text)
    message = r.json()["message"]
    assert message.endswith(".") and len(message) < 200 and "Error" not in message, message


async def test_malformed_dicom_headers_are_corrupt_image(served: Served) -> None:
    client, app = served
    headers = await _user(client)
    store = app.state.runtime.store
    before = store.count_dirs()
    for name, data in MALFORMED.items():
        for route in ROUTES:
            files = {"file": (f"{name}.dcm", data, "application/dicom")}
            r = await client.post(route, files=files, headers=headers)
            _assert_refused(r, 400, "corrupt_image", f"{route} {name}")
    assert store.count_dirs() == before and not store.leftovers()
    assert (await client.get("/history", headers=headers)).json()["items"] == []


async def test_malformed_dicom_batch_items_fail_as_corrupt_image(served: Served) -> None:
    client, _ = served
    headers = await _user(client)
    files = [(f"{name}.dcm", data) for name, data in MALFORMED.items()]
    r = await client.post("/jobs", files=multipart(files), headers=headers)
    assert r.status_code == 202, r.text
    job = await wait_job(client, r.json()["id"], headers)
    assert len(job["items"]) == len(MALFORMED)
    for item in job["items"]:
        assert item["status"] == "failed" and item["error"]["code"] == "corrupt_image", item


async def test_frame_of_a_single_frame_upload_is_bad_frame(served: Served) -> None:
    client, _ = served
    headers = await _user(client)
    for name, data in (("a.png", api_samples.phantom_png()), ("a.dcm", mr_dicom())):
        r = await client.post(
            "/classify", files={"file": (name, data)}, data={"frame": "7"}, headers=headers
        )
        _assert_refused(r, 400, "bad_frame", name)


async def test_extreme_finite_values_give_a_real_result(served: Served) -> None:
    """+-1e308 once overflowed the scaling window: a NaN image, classified with placeholder
    probabilities. It scales like +-1 (the window is its min and max), so the results agree."""
    client, _ = served
    headers = await _user(client)
    found = []
    for extreme in (1e308, 1.0):
        img = np.zeros((16, 16))
        img[0, 0], img[1, 1] = -extreme, extreme
        r = await client.post("/classify", files={"file": ("x.npy", _npy(img))}, headers=headers)
        assert r.status_code == 200, r.text
        [classification] = r.json()["classifications"]
        found.append(classification)
    for head in ("as_probabilities", "stage_probabilities"):
        probabilities = list(found[0][head].values())
        assert np.isfinite(probabilities).all()
        assert probabilities == pytest.approx(list(found[1][head].values()), abs=1e-6)


async def test_a_nan_model_input_is_refused(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ml.preprocessing

    real = ml.preprocessing.preprocess

    def poisoned(pixels: np.ndarray, size: int = ml.preprocessing.IMAGE_SIZE) -> np.ndarray:
        out = real(pixels, size).copy()
        out[0, 0] = np.nan
        return out

    monkeypatch.setattr(ml.preprocessing, "preprocess", poisoned)
    client, app = served
    headers = await _user(client)
    before = app.state.runtime.store.count_dirs()
    files = {"file": ("a.png", api_samples.phantom_png())}
    r = await client.post("/analyses", files=files, headers=headers)
    _assert_refused(r, 400, "corrupt_image", "NaN input")
    assert app.state.runtime.store.count_dirs() == before


async def test_an_unexpected_decoder_failure_is_corrupt_image(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import ml.io

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(ml.io, "read_image", broken)
    client, _ = served
    headers = await _user(client)
    files = {"file": ("a.png", api_samples.phantom_png())}
    with caplog.at_level(logging.ERROR, logger="backend.services.pipeline"):
        r = await client.post("/segment", files=files, headers=headers)
    _assert_refused(r, 400, "corrupt_image", "decoder failure")
    assert "recursion" not in r.json()["message"]
    [record] = [rec for rec in caplog.records if rec.name == "backend.services.pipeline"]
    assert record.exc_info is not None  # logged with its traceback
