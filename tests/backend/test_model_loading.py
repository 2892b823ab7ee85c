"""Ready sooner: the default models are warm before /health/ready says so, the others load in the
background, and a request for one still loading waits for that one copy."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import api_samples as samples
import httpx
import pytest
from api_helpers import DatabaseUrls, make_settings, signup_and_login

import backend.runtime as runtime_module

# Timing-sensitive (windows, waits, processes started or killed): `make test` runs it alone.
pytestmark = pytest.mark.serial


class GatedLoads:
    """Counts load_entry calls per key and holds the loads of chosen keys until released."""

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.calls: dict[str, int] = {}
        self.release = threading.Event()
        self._real = runtime_module.load_entry

    def __call__(self, registry: Any, entry: Any, **kw: Any) -> bool:
        self.calls[entry.key] = self.calls.get(entry.key, 0) + 1
        if entry.key in self.held:
            self.release.wait(30)
        return self._real(registry, entry, **kw)


@pytest.fixture
async def app_with_gate(
    databases: DatabaseUrls,
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], GatedLoads, Any]]:
    from backend.main import create_app
    from ml.bundle import make_random_bundle

    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    broken = make_random_bundle(models, "cnn_broken", "simple_cnn", task="classification")
    weights = next(broken.glob("*.weights.h5"))
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)  # fails its sha256
    gate = GatedLoads({"cnn_clinical", "cnn_broken"})
    monkeypatch.setattr(runtime_module, "load_entry", gate)
    settings = make_settings(tmp_path / "data", await databases.new("sqlite"), models)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                yield c, await signup_and_login(c, "loading@example.org"), gate, app
    finally:
        gate.release.set()


async def test_ready_with_the_defaults_while_others_load(app_with_gate) -> None:  # noqa: ANN001
    c, headers, gate, _app = app_with_gate
    r = await c.get("/health/ready")
    assert r.status_code == 200, r.text
    ready = r.json()
    assert ready["status"] == "ready"
    assert ready["loading"] == ["cnn_broken", "cnn_clinical"]
    assert set(ready["models"]) >= {"seg_tiny", "cnn_tiny", "cnn_clinical", "cnn_broken"}
    assert ready["models_loaded"] == 2  # the two defaults, warm

    # A default model answers at once.
    png = samples.phantom_png(11)
    r = await c.post("/classify", files={"file": ("x.png", png, "image/png")}, headers=headers)
    assert r.status_code == 200, r.text

    # A request for a model still loading waits for it (no second copy is built) ...
    waiting = asyncio.create_task(
        c.post(
            "/classify",
            files={"file": ("x.png", png, "image/png")},
            data={"models": "cnn_clinical"},
            headers=headers,
        )
    )
    broken = asyncio.create_task(
        c.post(
            "/classify",
            files={"file": ("x.png", png, "image/png")},
            data={"models": "cnn_broken"},
            headers=headers,
        )
    )
    await asyncio.sleep(0.5)
    assert not waiting.done() and not broken.done()
    gate.release.set()
    # ... and is answered once it is in; a bundle that fails to load is a clean 503.
    r = await waiting
    assert r.status_code == 200, r.text
    assert r.json()["classifications"][0]["model"]["key"] == "cnn_clinical"
    r = await broken
    assert r.status_code == 503 and r.json()["code"] == "model_unavailable", r.text
    assert gate.calls["cnn_clinical"] == 1

    async def settled() -> bool:
        return (await c.get("/health/ready")).json()["loading"] == []

    for _ in range(200):
        if await settled():
            break
        await asyncio.sleep(0.05)
    ready = (await c.get("/health/ready")).json()
    assert ready["loading"] == [] and "cnn_broken" not in ready["models"]
    assert ready["models_loaded"] == 3
    # The broken bundle is now unknown, with the reason on /models.
    r = await c.post(
        "/classify",
        files={"file": ("x.png", png, "image/png")},
        data={"models": "cnn_broken"},
        headers=headers,
    )
    assert r.status_code == 400 and r.json()["code"] == "unknown_model", r.text


async def test_every_explanation_path_is_traced_before_a_model_is_served(
    app_with_gate,  # noqa: ANN001
) -> None:
    """Warm-up traces every CAM, gradient, attention and probe function of the default models,
    so the first explanation request builds and traces nothing new."""
    from ml.explain.cam_graph import _CACHE

    c, headers, _gate, app = app_with_gate
    entry = app.state.runtime.registry.get("cnn_tiny")
    assert entry.ready

    def traced() -> dict[tuple, int]:
        fns = _CACHE.get(entry.model, {})
        return {k: _traces(f) for k, f in fns.items()}

    before = traced()
    assert before, "warm-up compiled nothing"
    for method in ("gradcam", "gradcam++", "eigencam", "integrated_gradients", "occlusion"):
        for head in ("binary", "stage"):
            r = await c.post(
                "/explain",
                files={"file": ("x.png", samples.phantom_png(12), "image/png")},
                data={"model": "cnn_tiny", "method": method, "head": head},
                headers=headers,
            )
            assert r.status_code == 200, r.text
    assert traced() == before


def _traces(fn: Any) -> int:
    """How many times a cached compiled function was traced (-1: not a tf.function)."""
    for obj in (fn, getattr(fn, "shared", None), getattr(getattr(fn, "shared", None), "fn", None)):
        count = getattr(obj, "experimental_get_tracing_count", None)
        if count is not None:
            return int(count())
    return -1
