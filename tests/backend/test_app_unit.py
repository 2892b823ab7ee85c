"""Pieces that need no database: settings, security, registry loading, the SPA, `serve`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from backend.core import security
from backend.core.config import DEFAULT_SECRET, Settings
from backend.inference.registry import load_registry


def test_default_secret_refused_outside_development() -> None:
    Settings(environment="development")  # fine for a laptop
    with pytest.raises(ValidationError, match="SPONDYSCAN_SECRET_KEY"):
        Settings(environment="production")
    with pytest.raises(ValidationError):
        Settings(environment="production", secret_key=SecretStr("short"))
    s = Settings(environment="production", secret_key=SecretStr("x" * 32))
    assert s.secret_key.get_secret_value() != DEFAULT_SECRET
    # Development on a public address is just as exposed as production.
    for host in ("0.0.0.0", "::", "192.168.1.20", "spondyscan.example.org"):
        with pytest.raises(ValidationError, match="SPONDYSCAN_SECRET_KEY"):
            Settings(environment="development", host=host)
        Settings(environment="development", host=host, secret_key=SecretStr("y" * 32))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        Settings(environment="development", host=host)
    assert "x" * 32 not in repr(s)  # secrets never show up in logs


def test_database_url_defaults_and_normalisation(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.resolved_database_url == f"sqlite+aiosqlite:///{(tmp_path / 'spondyscan.db')}"
    s = Settings(database_url="postgresql://u@h:5432/db")
    assert s.resolved_database_url == "postgresql+asyncpg://u@h:5432/db"


def test_tokens_and_keys() -> None:
    uid = uuid.uuid4()
    token, _ = security.create_access_token(uid, "k" * 32, 5)
    assert security.decode_access_token(token, "k" * 32).user_id == uid
    with pytest.raises(security.TokenError) as err:
        security.decode_access_token(token, "j" * 32)
    assert err.value.code == "invalid_token"
    key, prefix, digest = security.new_api_key()
    assert key.startswith(prefix) and security.hash_api_key(key) == digest
    assert digest != key and len(digest) == 64
    hashed = security.hash_password("correct horse", time_cost=1, memory_kib=8192)
    assert hashed.startswith("$argon2id$")
    assert security.verify_password("correct horse", hashed)
    assert not security.verify_password("wrong horse", hashed)
    assert not security.verify_password("x", "not-a-hash")


def test_registry_skips_tampered_bundles(models_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "models"
    shutil.copytree(models_dir, d)
    weights = d / "cnn_clinical" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:-16] + b"\0" * 16)
    (d / "broken").mkdir()
    (d / "broken" / "manifest.json").write_text("{not json")
    registry = load_registry(d)
    assert registry.keys() == ["cnn_tiny", "seg_tiny"]
    assert "sha256" in registry.errors["cnn_clinical"].lower()
    assert "broken" in registry.errors
    assert registry.defaults == {"segmentation": "seg_tiny", "classification": "cnn_tiny"}


def test_registry_serves_the_folded_copy_unless_told_not_to(models_dir: Path) -> None:
    import numpy as np

    from ml.fold import FoldedBatchNorm

    folded = load_registry(models_dir).get("seg_tiny")
    plain = load_registry(models_dir, fold=False).get("seg_tiny")
    assert folded.folding["used"] and folded.folding["folded"]
    assert folded.folding["max_difference"] < 1e-4
    assert any(isinstance(layer, FoldedBatchNorm) for layer in folded.model.layers)
    assert plain.folding == {}
    assert not any(isinstance(layer, FoldedBatchNorm) for layer in plain.model.layers)
    x = np.random.default_rng(0).random((2, *plain.input_shape)).astype(np.float32)
    np.testing.assert_allclose(folded.model(x), plain.model(x), atol=1e-5)


def test_the_registry_never_folds_an_explained_convolution(tmp_path: Path) -> None:
    """stats_cnn explains conv4, which a BatchNormalization follows: the served copy folds the
    other convolutions but keeps conv4 and its BatchNormalization as they are."""
    from keras import layers

    from ml.bundle import make_random_bundle

    make_random_bundle(tmp_path, "stats_tiny", "stats_cnn", task="classification")
    entry = load_registry(tmp_path).get("stats_tiny")
    assert entry.gradcam_layer == "conv4"
    assert entry.folding["used"] and entry.folding["folded"]
    assert "bn4" not in entry.folding["folded"]
    assert isinstance(entry.model.get_layer("bn4"), layers.BatchNormalization)
    assert not entry.model.get_layer("conv4").use_bias  # as built: nothing folded into it


def test_registry_defaults_without_flags(models_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "models"
    shutil.copytree(models_dir / "cnn_clinical", d / "cnn_clinical")
    registry = load_registry(d)
    # No bundle is flagged default: the first by key serves as the default.
    assert registry.defaults == {"classification": "cnn_clinical"}
    assert load_registry(tmp_path / "missing").models == {}


async def test_url_space_app_under_its_prefix_api_at_the_root(tmp_path: Path) -> None:
    """The web app owns /app/ (deep links included); every other path is the API's, JSON
    whatever the Accept header says; / redirects to the app."""
    from backend.main import create_app

    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><div id=root></div>")
    (dist / "assets" / "app.js").write_text("console.log(1)")
    app = create_app(Settings(spa_dir=dist, data_dir=tmp_path))
    transport = httpx.ASGITransport(app=app)  # no lifespan: only static routes are exercised
    html = {"Accept": "text/html,application/xhtml+xml"}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        root = await client.get("/", headers=html)
        assert root.status_code == 307 and root.headers["location"] == "/app/"
        assert (await client.get("/app")).headers["location"] == "/app/"
        for deep in ("/app/", "/app/analyze", "/app/history/123", "/app/models/x/y"):
            page = await client.get(deep, headers=html)
            assert page.status_code == 200 and "root" in page.text, deep
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["cache-control"] == "no-cache"
        asset = await client.get("/app/assets/app.js")
        assert asset.text == "console.log(1)" and "immutable" in asset.headers["cache-control"]
        missing = await client.get("/app/assets/gone-1234.js")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        assert (await client.get("/app/../../etc/passwd")).status_code == 404
        assert (await client.get("/app/%2e%2e/%2e%2e/etc/passwd")).text.find("root:") == -1
        # API paths answer JSON even to a browser's Accept header, with or without credentials.
        for path in ("/history/123", "/models", "/analyses", "/jobs", "/history"):
            r = await client.get(path, headers=html)
            assert r.headers["content-type"].startswith("application/json"), path
            assert r.json()["code"] in ("not_ready", "method_not_allowed"), path
        # The old client routes at the root are no longer pages.
        r = await client.get("/analyze", headers=html)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert (await client.get("/health/live", headers=html)).json() == {"status": "ok"}
        r = await client.get("/openapi.json", headers=html)
        assert r.json()["info"]["title"] == "spondyscan"
        assert not any(p.startswith("/app") for p in r.json()["paths"])


async def test_app_prefix_without_a_build_says_so(tmp_path: Path) -> None:
    from backend.main import create_app

    app = create_app(Settings(spa_dir=tmp_path / "nothing", data_dir=tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        r = await client.get("/app/history")
        assert r.status_code == 404 and r.json()["code"] == "no_web_app"
        assert "make spa" in r.json()["message"]


def test_openapi_operation_ids_are_clean() -> None:
    from backend.main import create_app

    schema = create_app(Settings()).openapi()
    ids = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert all("_post" not in i and "_get" not in i for i in ids), ids
    for path, ops in schema["paths"].items():
        for op in ops.values():
            assert op.get("tags") and op.get("summary") and op.get("description"), path
    assert {"OAuth2Password", "APIKey"} <= set(schema["components"]["securitySchemes"])
    json.dumps(schema)


def test_serve_prints_url(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import argparse

    import uvicorn

    from backend import serve

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setenv("SPONDYSCAN_PORT", "8000")
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    assert serve.run(parser.parse_args(["--port", "8123", "--data-dir", "/tmp/x"])) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/app/" in out and "Research use only" in out
    assert seen["port"] == 8123
    # One Settings object, built from flags + environment, goes straight into the app:
    # nothing is written back to the environment.
    app_settings = seen["app"].state.settings
    assert app_settings.port == 8123 and str(app_settings.data_dir) == "/tmp/x"
    assert os.environ["SPONDYSCAN_PORT"] == "8000" and "SPONDYSCAN_DATA_DIR" not in os.environ


def test_serve_refuses_default_secret_on_a_public_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    import uvicorn

    from backend import serve
    from ml.clierror import CliError

    for key in list(os.environ):
        if key.startswith("SPONDYSCAN_"):
            monkeypatch.delenv(key)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not start"))
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    with pytest.raises(CliError, match="SPONDYSCAN_SECRET_KEY") as info:
        serve.run(parser.parse_args(["--host", "0.0.0.0"]))
    assert "https://" not in str(info.value)  # one readable line, not pydantic's boilerplate
    monkeypatch.setenv("SPONDYSCAN_ENVIRONMENT", "production")
    with pytest.raises(CliError, match="SPONDYSCAN_SECRET_KEY"):
        serve.run(parser.parse_args(["--host", "127.0.0.1"]))


async def test_runner_attention_rollout_and_cam(tmp_path: Path) -> None:
    """Attention rollout (hybrid v3) and Grad-CAM through the batched runner."""
    import asyncio

    import numpy as np

    from backend.inference.runner import InferenceRunner
    from ml.bundle import make_random_bundle

    make_random_bundle(tmp_path, "h3", "hybrid_v3", task="classification", default=True)
    registry = load_registry(tmp_path)
    runner = InferenceRunner(registry, max_wait_ms=20)
    await runner.warm()
    entry = registry.get("h3")
    rng = np.random.default_rng(0)
    images = [rng.random((entry.input_size, entry.input_size), dtype=np.float32) for _ in range(3)]
    try:
        outs = await asyncio.gather(
            *(runner.cam(entry, im, head="stage_output", method="attention") for im in images)
        )
        cams = await asyncio.gather(
            runner.cam(entry, images[0], head="binary_output", method="gradcam", class_index=1),
            runner.cam(entry, images[1], head="binary_output", method="gradcam"),
        )
        stats = runner.stats()["batchers"]
    finally:
        await runner.close()
    for out in outs:
        assert out.heatmap.shape == (entry.input_size, entry.input_size)
        assert out.heatmap.min() >= 0.0 and out.heatmap.max() <= 1.0
        assert 0 <= out.class_index < 4 and 0.0 <= out.prob <= 1.0
    assert cams[0].class_index == 1
    assert stats["h3:cam:stage_output:attention"]["calls"] < 3


def test_clis_fail_loudly_on_a_broken_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command whose module does not import is an error, never a silently missing command."""
    from backend import cli as service_cli
    from ml import cli as science_cli

    monkeypatch.setitem(service_cli.SERVICE_COMMANDS, "ghost", ("backend.no_such_module", "x"))
    with pytest.raises(ModuleNotFoundError, match="backend.no_such_module"):
        service_cli.build_parser()
    monkeypatch.delitem(service_cli.SERVICE_COMMANDS, "ghost")
    monkeypatch.setitem(science_cli.COMMANDS, "ghost", ("ml.no_such_module", "x"))
    with pytest.raises(ModuleNotFoundError, match="ml.no_such_module"):
        science_cli.build_parser()


def test_expected_start_up_noise_is_held_back_and_the_rest_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from backend.core.logs import quiet_expected_noise, quiet_value_loggers

    quiet_value_loggers()
    quiet_expected_noise()
    quiet_expected_noise()  # idempotent: one filter, not two
    tf_log = logging.getLogger("tensorflow")
    assert len([f for f in tf_log.filters if type(f).__name__ == "_NotRetracing"]) == 1
    caplog.set_level(logging.DEBUG)
    tf_log.warning("5 out of the last 9 calls to <function fn> triggered tf.function retracing.")
    tf_log.warning("Out of memory while allocating a tensor")
    logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.types")
    logging.getLogger("sqlalchemy.engine").info("INSERT INTO analyses ... ('DOE^JANE')")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade a -> b")
    kept = [r.getMessage() for r in caplog.records]
    assert kept == ["Out of memory while allocating a tensor", "Running upgrade a -> b"]
