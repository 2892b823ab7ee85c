"""`make bench`: the design-style serving path against ours, same weights, same images, one run.

Both sides run as real HTTP servers in their own processes and are driven by the same client:

* design: ``bench.design`` - one request at a time, ``model.predict`` per model, eager
  ``GradientTape`` Grad-CAM, files + SQLite (what the design's Flask app did);
* ours: ``spondyscan serve`` - the FastAPI service with warm compiled models and micro-batching.

Measured for /classify, /segment, /explain and the full analysis: p50/p95 latency with one client,
throughput (and p50) with 8 concurrent clients; per server: time from process start to ready and
peak resident memory; achieved FLOP rate as a share of a matrix-multiply peak measured in the same
run. Results go to bench/results.json; ratios are printed. Runtime is bounded by --budget-s per
phase.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH_MODELS = ROOT / "var" / "bench-models"
CLIENTS = 8


# --------------------------------------------------------------------------- inputs


def ensure_models(models_dir: Path) -> Path:
    """The shipped bundles if there are any, else full-size random-weight ones (cached)."""
    from ml.bundle import discover_bundles, make_random_bundle

    tasks = set()
    for p in discover_bundles(models_dir):
        tasks.add(json.loads((p / "manifest.json").read_text()).get("task"))
    if {"segmentation", "classification"} <= tasks:
        return models_dir
    if len(discover_bundles(BENCH_MODELS)) >= 3:
        return BENCH_MODELS
    print(
        f"no trained bundles in {models_dir}: writing full-size random-weight bundles to "
        f"{BENCH_MODELS} (once)",
        flush=True,
    )
    BENCH_MODELS.mkdir(parents=True, exist_ok=True)
    make_random_bundle(BENCH_MODELS, "bench_seg", "attention_unet_lite", cfg={}, default=True)
    make_random_bundle(BENCH_MODELS, "bench_cnn", "simple_cnn", cfg={}, default=True)
    make_random_bundle(BENCH_MODELS, "bench_hybrid_v2", "hybrid_v2", cfg={})
    return BENCH_MODELS


def pick_models(models_dir: Path) -> dict[str, Any]:
    from ml.bundle import discover_bundles

    manifests = [
        json.loads((p / "manifest.json").read_text()) for p in discover_bundles(models_dir)
    ]

    def ordered(task: str) -> list[dict[str, Any]]:
        ms = [m for m in manifests if m.get("task") == task]
        return sorted(ms, key=lambda m: (not m.get("default"), m["key"]))

    seg = ordered("segmentation")[0]
    classifiers = ordered("classification")[:2]
    return {"segmentation": seg, "classifiers": classifiers}


def phantom_pngs(n: int) -> list[bytes]:
    from PIL import Image

    from ml.data.synthetic import make_phantom

    out = []
    for seed in range(n):
        img = np.clip(np.rint(make_phantom(seed, 256).image * 255), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def matmul_peak(seconds: float = 2.0, n: int = 1024) -> float:
    """Best float32 matmul rate (FLOP/s) this machine gives TensorFlow right now."""
    import tensorflow as tf

    a = tf.random.uniform((n, n))
    b = tf.random.uniform((n, n))
    mm = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    mm(a, b).numpy()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        for _ in range(4):
            c = mm(a, b)
        c.numpy()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best


# --------------------------------------------------------------------------- servers


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


# --------------------------------------------------------------------------- load


@dataclass
class Endpoint:
    name: str
    path: str
    form: dict[str, Any]
    flops: float  # useful FLOPs per request


async def run_phase(
    server: Server,
    ep: Endpoint,
    images: list[bytes],
    *,
    requests: int,
    clients: int,
    budget_s: float,
) -> dict[str, Any]:
    """``requests`` calls spread over ``clients`` concurrent clients (stops at the budget)."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(10**9))
    deadline = time.perf_counter() + budget_s

    async with httpx.AsyncClient(
        base_url=server.url, timeout=600.0, headers=server.headers
    ) as client:

        async def worker() -> None:
            while True:
                i = next(counter)
                if i >= requests or (time.perf_counter() > deadline and i >= max(3, clients)):
                    return
                files = {"file": (f"img{i}.png", images[i % len(images)], "image/png")}
                t = time.perf_counter()
                r = await client.post(ep.path, files=files, data=ep.form)
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors.append(f"{r.status_code} {r.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    if errors:
        print(f"  {server.name} {ep.name}: {len(errors)} errors, first: {errors[0]}", flush=True)
    done = len(latencies)
    q = statistics.quantiles(latencies, n=20) if done >= 2 else [float("nan")] * 19
    return {
        "requests": done,
        "errors": len(errors),
        "wall_s": round(wall, 3),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if done else None,
        "p95_ms": round(q[18] * 1000, 1) if done >= 2 else None,
        "throughput_rps": round(done / wall, 3) if wall > 0 else None,
        "flop_rate": ep.flops * done / wall if wall > 0 else None,
    }


async def bench_server(
    server: Server,
    endpoints: list[Endpoint],
    images: list[bytes],
    args: argparse.Namespace,
    *,
    load: bool = True,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ep in endpoints:
        # One warm-up call: the design's first predict() traces; ours warmed at start-up.
        t = time.perf_counter()
        warm = await run_phase(server, ep, images, requests=1, clients=1, budget_s=600)
        first_ms = round((time.perf_counter() - t) * 1000, 1)
        single = await run_phase(
            server, ep, images, requests=args.requests, clients=1, budget_s=args.budget_s
        )
        out[ep.name] = {"first_ms": first_ms if warm["requests"] else None, "one_client": single}
        line = (
            f"  {server.name:<6} {ep.name:<22} p50 {single['p50_ms']} ms  p95 {single['p95_ms']} ms"
        )
        if load:
            # At least one request per client, so all 8 are busy at once.
            loaded = await run_phase(
                server,
                ep,
                images,
                requests=max(args.load_requests, CLIENTS),
                clients=CLIENTS,
                budget_s=args.budget_s,
            )
            out[ep.name][f"{CLIENTS}_clients"] = loaded
            line += f"  {CLIENTS} clients: {loaded['throughput_rps']} req/s"
        print(line, flush=True)
    return out


async def login(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        creds = {"email": "bench@example.org", "password": "bench-password"}
        await client.post("/auth/signup", json=creds)
        r = await client.post(
            "/auth/token", data={"username": creds["email"], "password": creds["password"]}
        )
        r.raise_for_status()
        server.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}


# --------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--requests", type=int, default=6, help="one-client requests per endpoint")
    parser.add_argument(
        "--load-requests",
        type=int,
        default=CLIENTS,
        help=f"requests per endpoint with {CLIENTS} clients (at least {CLIENTS})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 requests per phase, no faithfulness runs"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=10.0,
        help="time limit per phase (a phase still makes 3 requests, and one per client)",
    )
    parser.add_argument(
        "--no-faithfulness",
        action="store_true",
        help="skip the extra runs of ours with the faithfulness score",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.load_requests, args.no_faithfulness = 3, CLIENTS, True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()

    models_dir = ensure_models(args.models_dir.resolve())
    chosen = pick_models(models_dir)
    seg, cls = chosen["segmentation"], chosen["classifiers"]
    cls_keys = [m["key"] for m in cls]
    f_seg = float(seg["flops"])
    f_cls = [float(m["flops"]) for m in cls]
    images = phantom_pngs(12)
    print(
        f"models: segmentation {seg['key']}, classifiers {', '.join(cls_keys)} (from {models_dir})",
        flush=True,
    )
    peak = matmul_peak()
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)

    # Useful work per request (Grad-CAM = forward + backward ~ 3 forwards), the same for both.
    endpoints = [
        Endpoint("classify", "/classify", {"models": cls_keys}, sum(f_cls)),
        Endpoint("segment", "/segment", {}, f_seg),
        Endpoint("explain", "/explain", {"model": cls_keys[0]}, 3 * f_cls[0]),
        Endpoint("analysis", "/analyses", {"models": cls_keys}, f_seg + 4 * sum(f_cls)),
    ]
    ours_forms = {
        "explain": {"model": cls_keys[0], "focus": "box", "faithfulness": "false"},
        "analysis": {"models": cls_keys, "faithfulness": "false"},
    }
    work = Path(tempfile.mkdtemp(prefix="spondyscan-bench-"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "models": {
            "segmentation": seg["key"],
            "classifiers": cls_keys,
            "flops": {seg["key"]: f_seg, **dict(zip(cls_keys, f_cls, strict=True))},
        },
        "matmul_peak_flops": peak,
        "notes": [
            "design: one request at a time, model.predict per model, eager GradientTape "
            "Grad-CAM with a per-request gradient model, box focus, files + SQLite",
            "ours: compiled models warmed at start-up, micro-batched; explain with box focus "
            "and no faithfulness score for a like-for-like comparison",
        ],
    }
    try:
        port = free_port()
        design = start_server(
            "design",
            [
                sys.executable,
                "-m",
                "bench.design",
                "--port",
                str(port),
                "--models-dir",
                str(models_dir),
                "--data-dir",
                str(work / "design"),
            ],
            env,
            "/health",
            work / "design.log",
            port,
        )
        print(f"design ready in {design.ready_s:.1f}s", flush=True)
        try:
            design_res = asyncio.run(bench_server(design, endpoints, images, args))
        finally:
            design_peak = design.stop()

        port = free_port()
        ours_env = {
            **env,
            "SPONDYSCAN_ENVIRONMENT": "development",
            "SPONDYSCAN_ARGON2_TIME_COST": "1",
            "SPONDYSCAN_ARGON2_MEMORY_KIB": "8192",
        }
        ours = start_server(
            "ours",
            [
                sys.executable,
                "-m",
                "backend.serve",
                "--port",
                str(port),
                "--models-dir",
                str(models_dir),
                "--data-dir",
                str(work / "ours"),
                "--log-level",
                "warning",
            ],
            ours_env,
            "/health/ready",
            work / "ours.log",
            port,
        )
        print(f"ours ready in {ours.ready_s:.1f}s", flush=True)
        try:
            asyncio.run(login(ours))
            ours_eps = [
                Endpoint(e.name, e.path, ours_forms.get(e.name, e.form), e.flops) for e in endpoints
            ]
            ours_res = asyncio.run(bench_server(ours, ours_eps, images, args))
            extra: dict[str, Any] = {}
            if not args.no_faithfulness:
                faith_eps = [
                    Endpoint(
                        "explain+faithfulness",
                        "/explain",
                        {"model": cls_keys[0], "focus": "segmentation"},
                        3 * f_cls[0],
                    ),
                    Endpoint(
                        "analysis+faithfulness",
                        "/analyses",
                        {"models": cls_keys},
                        f_seg + 4 * sum(f_cls),
                    ),
                ]
                # The score costs (steps + 1) * 3 extra forward passes per explanation: shown
                # for one client only, to keep the run short.
                light = argparse.Namespace(**{**vars(args), "requests": 3})
                extra = asyncio.run(bench_server(ours, faith_eps, images, light, load=False))

            async def stats() -> dict[str, Any]:
                async with httpx.AsyncClient(base_url=ours.url) as c:
                    return (await c.get("/health/ready")).json()["inference"]

            ours_stats = asyncio.run(stats())
        finally:
            ours_peak = ours.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results["design"] = {
        "start_to_ready_s": round(design.ready_s, 2),
        "peak_rss_mib": design_peak,
        "endpoints": design_res,
    }
    results["ours"] = {
        "start_to_ready_s": round(ours.ready_s, 2),
        "peak_rss_mib": ours_peak,
        "endpoints": ours_res,
        "with_faithfulness": extra,
        "inference_counters": ours_stats,
    }
    load_key = f"{CLIENTS}_clients"
    ratios: dict[str, Any] = {}
    print("\nendpoint          p50 design/ours   throughput ours/design   FLOP share design/ours")
    for ep in endpoints:
        d, o = design_res[ep.name], ours_res[ep.name]
        r = {
            "p50_speedup": ratio(d["one_client"]["p50_ms"], o["one_client"]["p50_ms"]),
            "p95_speedup": ratio(d["one_client"]["p95_ms"], o["one_client"]["p95_ms"]),
            "throughput_gain": ratio(o[load_key]["throughput_rps"], d[load_key]["throughput_rps"]),
            "design_flop_share": round(d[load_key]["flop_rate"] / peak, 4),
            "ours_flop_share": round(o[load_key]["flop_rate"] / peak, 4),
        }
        ratios[ep.name] = r
        print(
            f"{ep.name:<17} {r['p50_speedup']!s:>8}x {r['throughput_gain']!s:>18}x "
            f"{r['design_flop_share']:>16.1%} / {r['ours_flop_share']:.1%}"
        )
    results["ratios"] = ratios
    results["targets"] = {
        "analysis_p50_at_most_one_third": (ratios["analysis"]["p50_speedup"] or 0) >= 3.0,
        "analysis_throughput_at_least_4x": (ratios["analysis"]["throughput_gain"] or 0) >= 4.0,
    }
    print(
        f"\nstart to ready: design {design.ready_s:.1f}s, ours {ours.ready_s:.1f}s; "
        f"peak memory: design {design_peak or 0:.0f} MiB, ours {ours_peak or 0:.0f} MiB"
    )
    print(f"targets: {results['targets']}")
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} ({results['bench_seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
