"""A real API server in a subprocess (uvicorn on a loopback port), for tests that need a live
socket: schema fuzzing, floods, faults (SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from api_helpers import SECRET

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_models(models_dir: Path) -> Path:
    """The browser suite's tiny random-weight bundles (one segmenter, two classifiers)."""
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    try:
        from make_bundles import make_bundles
    finally:
        sys.path.pop(0)
    make_bundles(models_dir)
    return models_dir


class LiveApi:
    """``spondyscan serve``-equivalent uvicorn process on 127.0.0.1 (own process group)."""

    def __init__(self, tmp: Path, models_dir: Path, **settings: Any) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / f"api-{self.port}.log"
        values = {
            "ENVIRONMENT": "test",
            "SECRET_KEY": SECRET,
            "DATA_DIR": str(self.data_dir),
            "DATABASE_URL": f"sqlite+aiosqlite:///{self.data_dir / 'api.db'}",
            "MODELS_DIR": str(models_dir),
            "SPA_DIR": str(tmp / "no-spa"),
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_KIB": "8192",
            "FAITHFULNESS_STEPS": "2",
            "BROKER_URL": "redis://127.0.0.1:9/0",
        }
        values.update({k.upper(): str(v) for k, v in settings.items()})
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPONDYSCAN_")}
        env.update({f"SPONDYSCAN_{k}": v for k, v in values.items()})
        env.update(TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", PYTHONUNBUFFERED="1")
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> LiveApi:
        cmd = [
            sys.executable, "-m", "uvicorn", "backend.main:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the API exited early:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health/ready", timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        raise AssertionError(f"the API was not ready after {timeout}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.pid).memory_info().rss / 2**20

    def log_tail(self, n: int = 6000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, as the out-of-memory killer or a pulled plug would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def token(self, email: str, password: str = "pass-word-1") -> str:
        httpx.post(f"{self.base}/auth/signup", json={"email": email, "password": password})
        r = httpx.post(f"{self.base}/auth/token", data={"username": email, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])
