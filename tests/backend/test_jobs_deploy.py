"""Deployment files: docker-compose.yml describes the topology the distributed tests run as
processes (API + workers + Redis + PostgreSQL), and the Dockerfile builds SPA + runtime + models.

No Docker engine runs here: `docker compose config` validates the file where the compose
plugin exists; the structural checks below run everywhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_services_healthchecks_and_volumes(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"api", "worker", "postgres", "redis"}
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        check = service.get("healthcheck") or {}
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), name
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount["source"]
            assert source in declared, (name, source)
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services and cond["condition"] == "service_healthy", (name, dep)
    # Durable state lives in named volumes.
    assert any(v.endswith("/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])


def test_compose_runs_the_tested_topology(compose: dict) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert api["command"][:2] == ["spondyscan", "serve"]
    assert worker["command"][:2] == ["spondyscan", "worker"]
    # `docker compose up --scale worker=N` needs workers without fixed names or host ports.
    assert "container_name" not in worker and "ports" not in worker
    assert worker.get("image") == api.get("image")
    env_api, env_worker = _env(api), _env(worker)
    assert env_api == env_worker
    assert env_api["SPONDYSCAN_JOB_BACKEND"] == "celery"
    assert env_api["SPONDYSCAN_BROKER_URL"].startswith("redis://redis:6379/")
    assert env_api["SPONDYSCAN_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env_api["SPONDYSCAN_DATABASE_URL"]
    assert env_api["SPONDYSCAN_ENVIRONMENT"] == "production"
    assert "SPONDYSCAN_SECRET_KEY:?" in env_api["SPONDYSCAN_SECRET_KEY"]  # no default secret
    # The artifact folder is shared by path: the same volume at the data dir in both.
    data_dir = env_api["SPONDYSCAN_DATA_DIR"]
    shared = f"artifacts:{data_dir}"
    assert shared in api["volumes"] and shared in worker["volumes"]
    assert "api" in worker["depends_on"]  # the API migrates the database first


def test_settings_accept_the_compose_environment(compose: dict, monkeypatch) -> None:
    from backend.core.config import Settings

    for key in list(os.environ):
        if key.startswith("SPONDYSCAN_"):
            monkeypatch.delenv(key)
    for key, value in _env(compose["services"]["worker"]).items():
        value = re.sub(r"\$\{([A-Z_]+):[-?][^}]*\}", lambda m: "x" * 40, value)
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.job_backend == "celery" and settings.environment == "production"
    assert settings.resolved_database_url.startswith("postgresql+asyncpg://")


def test_docker_compose_config_when_available() -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30
        ).returncode
        != 0
    ):
        pytest.skip("the docker compose plugin is not installed here")
    env = {**os.environ, "SPONDYSCAN_SECRET_KEY": "x" * 40}
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_dockerfile_is_multi_stage_spa_then_runtime_with_models() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M | re.I)
    assert len(stages) >= 2
    (first_image, first_name), (last_image, _) = stages[0], stages[-1]
    assert first_image.startswith("node:") and first_name
    assert last_image.startswith("python:")
    assert "npm ci" in text and "npm run build" in text
    assert re.search(rf"COPY --from={first_name} \S*dist/? \S*frontend/dist", text)
    assert re.search(r"^COPY models/? ", text, flags=re.M)
    assert "constraints.txt" in text and re.search(r"^HEALTHCHECK ", text, flags=re.M)
    assert re.search(r'^CMD \["spondyscan", "serve"\]', text, flags=re.M)
    assert re.search(r"^USER (?!root)", text, flags=re.M)
    # The image binds 0.0.0.0: it must run as production, which refuses the default secret.
    assert re.search(r"^\s*SPONDYSCAN_ENVIRONMENT=production\b", text, flags=re.M)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", "var", "frontend/node_modules"} <= set(ignored)


def test_readme_has_a_scaling_section() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Scaling\n(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    assert match, "README.md needs a '## Scaling' section"
    section = match.group(1)
    for words in (
        "--scale worker=",
        "SPONDYSCAN_JOB_BACKEND",
        "SPONDYSCAN_BROKER_URL",
        "PostgreSQL",
        "Redis",
        "monitor",
        "replica",
    ):
        assert words.lower() in section.lower(), words
