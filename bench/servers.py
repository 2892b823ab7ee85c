"""Each side of the benchmark as a real HTTP server in its own process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.inputs import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    log: Path
    ready_s: float
    headers: dict[str, str] = field(default_factory=dict)

    def stop(self) -> float | None:
        peak = peak_rss_mib(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return peak


def start_server(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    ready_path: str,
    log: Path,
    port: int,
    timeout: float = 300.0,
) -> Server:
    t0 = time.perf_counter()
    fh = log.open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=2.0) as client:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early; log:\n{log.read_text()[-3000:]}")
            try:
                if client.get(url + ready_path).status_code == 200:
                    return Server(name, proc, url, log, time.perf_counter() - t0)
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} not ready after {timeout}s; log:\n{log.read_text()[-3000:]}")


def start_design(models_dir: Path, work: Path, env: dict[str, str]) -> Server:
    """``bench.design``: the design's Flask-style app, files + SQLite under ``work``."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.design", "--port", str(port)]
    cmd += ["--models-dir", str(models_dir), "--data-dir", str(work / "design")]
    return start_server("design", cmd, env, "/health", work / "design.log", port)


def start_ours(models_dir: Path, work: Path, env: dict[str, str]) -> Server:
    """``backend.serve`` in development mode, with cheap password hashing for the bench login."""
    port = free_port()
    ours_env = {
        **env,
        "SPONDYSCAN_ENVIRONMENT": "development",
        "SPONDYSCAN_ARGON2_TIME_COST": "1",
        "SPONDYSCAN_ARGON2_MEMORY_KIB": "8192",
        # The 8 bench clients share one account: let all of them run at once.
        "SPONDYSCAN_MAX_CONCURRENT_ANALYSES": "16",
    }
    cmd = [sys.executable, "-m", "backend.serve", "--port", str(port)]
    cmd += ["--models-dir", str(models_dir), "--data-dir", str(work / "ours")]
    cmd += ["--log-level", "warning"]
    return start_server("ours", cmd, ours_env, "/health/ready", work / "ours.log", port)


async def login(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        creds = {"email": "bench@example.org", "password": "bench-password"}
        await client.post("/auth/signup", json=creds)
        r = await client.post(
            "/auth/token", data={"username": creds["email"], "password": creds["password"]}
        )
        r.raise_for_status()
        server.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}


async def inference_counters(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as c:
        return (await c.get("/health/ready")).json()["inference"]
