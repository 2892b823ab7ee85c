"""API test fixtures: the real app (lifespan included) on a temporary SQLite database, and the
same suite again on a fresh PostgreSQL database when 127.0.0.1:5432 answers; tiny random-weight
bundles in a temporary models folder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import api_samples
import httpx
import pytest
from api_helpers import BACKENDS, DatabaseUrls, Env, make_settings, signup_and_login
from study_helpers import StudyEnv, shipped_models, study_settings


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ml.bundle import make_random_bundle

    d = tmp_path_factory.mktemp("models")
    make_random_bundle(d, "seg_tiny", "attention_unet_lite", task="segmentation", default=True)
    cnn = make_random_bundle(d, "cnn_tiny", "simple_cnn", task="classification", default=True)
    # A model card and a plot, as trained bundles have.
    (cnn / "README.md").write_text("# cnn_tiny\n\nRandom weights. Research use only.\n")
    (cnn / "plots").mkdir(exist_ok=True)
    (cnn / "plots" / "confusion_binary.png").write_bytes(api_samples.blank_png())
    make_random_bundle(
        d, "cnn_clinical", "simple_cnn", task="classification", label_source="clinical", seed=1
    )
    return d


@pytest.fixture(scope="session")
async def databases(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DatabaseUrls]:
    urls = DatabaseUrls(tmp_path_factory.mktemp("db"))
    yield urls
    await urls.drop_all()


@pytest.fixture(scope="session", params=BACKENDS)
async def env(
    request: pytest.FixtureRequest,
    databases: DatabaseUrls,
    models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Env]:
    from backend.main import create_app

    url = await databases.new(request.param)
    settings = make_settings(tmp_path_factory.mktemp(f"data-{request.param}"), url, models_dir)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Env(app, client, app.state.runtime, settings, request.param)


@pytest.fixture(scope="session")
async def alice(env: Env) -> dict[str, str]:
    return await signup_and_login(env.client, "alice@example.org")


@pytest.fixture(scope="session")
async def bob(env: Env) -> dict[str, str]:
    return await signup_and_login(env.client, "bob@example.org")


@pytest.fixture(scope="module", params=BACKENDS)
async def senv(
    request: pytest.FixtureRequest,
    databases: DatabaseUrls,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[StudyEnv]:
    """An app with the shipped segmenter, default classifier and domain reference (studies and
    the applicability domain need models that see), jobs embedded, on SQLite and PostgreSQL."""
    from backend.main import create_app

    models = shipped_models(tmp_path_factory.mktemp("study-models"))
    url = await databases.new(request.param)
    settings = study_settings(tmp_path_factory.mktemp("studies"), url, models)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            alice = await signup_and_login(client, "alice@example.org")
            bob = await signup_and_login(client, "bob@example.org")
            yield StudyEnv(app, client, settings, alice, bob)
