"""Helpers for the batch-job tests: images, zips, waiting, real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import api_samples as samples
import httpx
from api_helpers import SECRET

ROOT = Path(__file__).resolve().parents[2]
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# A Redis database of its own, flushed before and after the suite (override when it clashes).
REDIS_DB = int(os.environ.get("SPONDYSCAN_TEST_REDIS_DB", "13"))
# Nothing listens here: the embedded back end must never need the broker.
DEAD_BROKER = "redis://127.0.0.1:9/0"

# Short broker and claim timings so a killed worker's item is taken over within seconds.
FAST_RECOVERY = {
    "job_visibility_timeout": 4,
    "job_restore_interval": 1.0,
    "job_lease_seconds": 3.0,
}


def redis_reachable() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5):
            return True
    except OSError:
        return False


def redis_url(db: int = REDIS_DB) -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def flush_redis(db: int = REDIS_DB) -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    try:
        client.flushdb()
    finally:
        client.close()


def images(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    """n distinct synthetic spine slices as PNG files."""
    return [(f"slice_{i:03d}.png", samples.phantom_png(i)) for i in range(start, start + n)]


def multipart(files: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in files]


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            if name.endswith("/"):
                zf.writestr(zipfile.ZipInfo(name), b"")
            else:
                zf.writestr(name, data)
    return buf.getvalue()


async def wait_job(
    client: httpx.AsyncClient,
    job_id: str,
    headers: dict[str, str],
    timeout: float = 120.0,
    diagnose: Any = None,
) -> dict[str, Any]:
    """Poll until the job is finished with nothing running; fail with its state otherwise."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await client.get(f"/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in ("completed", "cancelled") and job["progress"]["running"] == 0:
            return job
        await asyncio.sleep(0.2)
    extra = diagnose() if diagnose else ""
    raise AssertionError(f"job {job_id} did not finish: {job.get('progress')}\n{extra}")


def summaries_by_index(job: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {item["index"]: item["result"] for item in job["items"]}


def assert_same_results(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-4) -> None:
    """Two jobs over the same images gave the same labels, probabilities and ROIs."""
    ra, rb = summaries_by_index(a), summaries_by_index(b)
    assert ra.keys() == rb.keys()
    for index in ra:
        x, y = ra[index], rb[index]
        assert x is not None and y is not None, index
        for ca, cb in zip(x["classifications"], y["classifications"], strict=True):
            assert ca["model"] == cb["model"]
            assert ca["as_status"] == cb["as_status"], (index, ca, cb)
            assert ca["stage"] == cb["stage"], (index, ca, cb)
            assert abs(ca["p_positive"] - cb["p_positive"]) < tol, (index, ca, cb)
            assert abs(ca["stage_probability"] - cb["stage_probability"]) < tol, (index, ca, cb)
        assert (x["segmentation"] or {}).get("roi") == (y["segmentation"] or {}).get("roi"), index
        for ea, eb in zip(x["explanations"], y["explanations"], strict=True):
            assert ea["class_label"] == eb["class_label"]
            if ea["faithfulness_score"] is not None:
                assert abs(ea["faithfulness_score"] - eb["faithfulness_score"]) < 1e-3, index


def settings_env(settings: Any) -> dict[str, str]:
    """The environment that gives a worker process the same settings as the test's API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPONDYSCAN_")}
    values = {
        "ENVIRONMENT": settings.environment,
        "SECRET_KEY": SECRET,
        "DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.resolved_database_url,
        "MODELS_DIR": str(settings.models_dir),
        "BROKER_URL": settings.broker_url,
        "JOB_QUEUE": settings.job_queue,
        "MAX_PIXELS": str(settings.max_pixels),
        "MAX_UPLOAD_BYTES": str(settings.max_upload_bytes),
        "FAITHFULNESS_STEPS": str(settings.faithfulness_steps),
        "FAITHFULNESS_COARSE_FIRST_GFLOPS": str(settings.faithfulness_coarse_first_gflops),
        "BATCH_WAIT_MS": str(settings.batch_wait_ms),
        "JOB_VISIBILITY_TIMEOUT": str(settings.job_visibility_timeout),
        "JOB_RESTORE_INTERVAL": str(settings.job_restore_interval),
        "JOB_LEASE_SECONDS": str(settings.job_lease_seconds),
    }
    env.update({f"SPONDYSCAN_{k}": v for k, v in values.items()})
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """One `spondyscan worker` subprocess (its own process group, so nothing outlives it)."""

    def __init__(self, name: str, settings: Any, tmp: Path, concurrency: int = 1) -> None:
        self.name = name
        self.hostname = f"{name}@test"
        self.ready_file = tmp / f"{name}.ready"
        self.log_path = tmp / f"{name}.log"
        self.ready_file.unlink(missing_ok=True)
        exe = Path(sys.executable).with_name("spondyscan")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "backend.cli"]
        cmd += [
            "worker",
            "--concurrency",
            str(concurrency),
            "--pool",
            "threads",
            "--hostname",
            self.hostname,
            "--ready-file",
            str(self.ready_file),
            "--loglevel",
            "INFO",
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=settings_env(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # What its claims are recorded under (the console script is this very process).
        self.worker_id = f"celery:{self.hostname}:{self.proc.pid}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited early:\n{self.log_tail()}")
            time.sleep(0.2)
        raise AssertionError(f"worker {self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL whatever is left of the group."""
        try:
            if self.proc.poll() is None:
                self.signal(signal.SIGCONT)
                self.signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        finally:
            self._log.close()
