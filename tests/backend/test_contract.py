"""The contract matches the server: schemathesis against a live API, every operation, every
check, the stateful phase on, a fixed seed, authenticated (tests/backend/live_api.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from live_api import ROOT, LiveApi, tiny_models

ST = Path(sys.executable).with_name("st")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    if not ST.exists() and shutil.which("st") is None:
        pytest.skip("schemathesis is not installed (make setup installs it)")
    tmp = tmp_path_factory.mktemp("contract")
    api = LiveApi(
        tmp,
        tiny_models(tmp / "models"),
        # Fuzzing signs up and logs in far more than a person would.
        signup_rate="100000/minute",
        login_rate_per_address="100000/minute",
        login_rate_per_account="100000/minute",
        lockout_failures=100000,
        max_concurrent_analyses=64,
        max_open_jobs=1000,
    ).start()
    try:
        yield api
    finally:
        api.stop()


def _run(api: LiveApi, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(ST if ST.exists() else "st"), "run", f"{api.base}/openapi.json",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--seed", "42",
        "--max-examples", "25",
        # One worker: hypothesis' source inspection is not thread-safe on Python 3.11.
        "--workers", "1",
        "--request-timeout", "60",
        "-H", f"Authorization: Bearer {token}",
        *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def _failures(result: subprocess.CompletedProcess[str]) -> str:
    out = result.stdout + result.stderr
    return out[-12000:]


def _assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, _failures(result)
    out = result.stdout
    # Every selected operation was tested and every generated case passed every check.
    selected = re.search(r"Selected: (\d+)/", out)
    tested = re.search(r"Tested: (\d+)", out)
    assert selected and tested and selected.group(1) == tested.group(1), _failures(result)
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert cases and cases.group(1) == cases.group(2) and int(cases.group(1)) > 0, out[-3000:]


def test_every_operation_matches_its_schema(live: LiveApi) -> None:
    # Log-out revokes the token every other request uses: it has a run of its own below.
    result = _run(live, live.token("fuzz@example.org"), "--exclude-path", "/auth/logout")
    _assert_clean(result)


def test_logout_matches_its_schema(live: LiveApi) -> None:
    result = _run(live, live.token("fuzz-logout@example.org"), "--include-path", "/auth/logout")
    _assert_clean(result)
