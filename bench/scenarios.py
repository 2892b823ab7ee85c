"""The measured scenarios: each endpoint with one client and with ``CLIENTS`` at once."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.inputs import Inputs
from bench.servers import Server, inference_counters, login, start_design, start_ours

CLIENTS = 8


@dataclass
class Endpoint:
    name: str
    path: str
    form: dict[str, Any]
    flops: float  # useful FLOPs per request


@dataclass
class Measured:
    """One server's run: start-up, peak memory and the per-endpoint figures."""

    ready_s: float
    peak_rss_mib: float | None
    endpoints: dict[str, Any]
    with_faithfulness: dict[str, Any] = field(default_factory=dict)
    inference_counters: dict[str, Any] = field(default_factory=dict)
    study: dict[str, Any] = field(default_factory=dict)
    cold: dict[str, Any] = field(default_factory=dict)


def base_endpoints(inp: Inputs) -> list[Endpoint]:
    """The four endpoints as the design calls them."""
    cls_keys, f_seg, f_cls = inp.cls_keys, inp.seg_flops, inp.cls_flops
    # Useful work per request (Grad-CAM = forward + backward ~ 3 forwards), the same for both.
    return [
        Endpoint("classify", "/classify", {"models": cls_keys}, sum(f_cls)),
        Endpoint("segment", "/segment", {}, f_seg),
        Endpoint("explain", "/explain", {"model": cls_keys[0]}, 3 * f_cls[0]),
        Endpoint("analysis", "/analyses", {"models": cls_keys}, f_seg + 4 * sum(f_cls)),
    ]


# The design has no applicability-domain check: ours runs every model whatever the image (the
# flag is still reported), so both servers do the same work on phantoms too.
RUN_ALL = {"allow_out_of_domain": "true"}


def ours_endpoints(endpoints: list[Endpoint], cls_keys: list[str]) -> list[Endpoint]:
    """The same endpoints with our forms: box focus and no faithfulness, like the design."""
    forms: dict[str, dict[str, Any]] = {
        "explain": {"model": cls_keys[0], "focus": "box", "faithfulness": "false"},
        "analysis": {"models": cls_keys, "faithfulness": "false"},
    }
    return [
        Endpoint(e.name, e.path, {**forms.get(e.name, e.form), **RUN_ALL}, e.flops)
        for e in endpoints
    ]


def faithfulness_endpoints(inp: Inputs) -> list[Endpoint]:
    cls_keys, f_seg, f_cls = inp.cls_keys, inp.seg_flops, inp.cls_flops
    return [
        Endpoint(
            "explain+faithfulness",
            "/explain",
            {"model": cls_keys[0], "focus": "segmentation", **RUN_ALL},
            3 * f_cls[0],
        ),
        Endpoint(
            "analysis+faithfulness",
            "/analyses",
            {"models": cls_keys, **RUN_ALL},
            f_seg + 4 * sum(f_cls),
        ),
        # Exactly what the web app sends: the default classifier, heatmap, score.
        Endpoint("default_analysis", "/analyses", {}, f_seg + 4 * f_cls[0]),
    ]


def _phase_stats(
    latencies: list[float], errors: list[str], wall: float, ep: Endpoint
) -> dict[str, Any]:
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
    return _phase_stats(latencies, errors, wall, ep)


async def work_done(server: Server, ep: Endpoint, image: bytes) -> dict[str, int]:
    """What one response of this endpoint holds, so a fast answer is not a withheld one."""
    async with httpx.AsyncClient(base_url=server.url, timeout=600, headers=server.headers) as c:
        r = await c.post(ep.path, files={"file": ("x.png", image, "image/png")}, data=ep.form)
    body = r.json() if r.status_code == 200 else {}
    explanations = body.get("explanations") or (
        [body["explanation"]] if "explanation" in body else []
    )
    return {
        "status": r.status_code,
        "segmentations": int(bool(body.get("segmentation"))),
        "classifications": len(body.get("classifications") or []),
        "explanations": len([e for e in explanations if e]),
        "faithfulness_scores": len([e for e in explanations if e and e.get("faithfulness")]),
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


def measure_design(
    inp: Inputs,
    endpoints: list[Endpoint],
    args: argparse.Namespace,
    env: dict[str, str],
    work: Path,
) -> Measured:
    design = start_design(inp.models_dir, work, env)
    print(f"design ready in {design.ready_s:.1f}s", flush=True)
    try:
        results = asyncio.run(bench_server(design, endpoints, inp.images, args))
    finally:
        peak = design.stop()
    return Measured(design.ready_s, peak, results)


def _bench_ours(
    ours: Server, inp: Inputs, endpoints: list[Endpoint], args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Endpoint figures, faithfulness figures (empty when skipped) and inference counters."""
    from bench.cold import first_after_ready, wait_all_loaded

    asyncio.run(login(ours))
    # Before anything else: the first analysis right after /health/ready.
    first = asyncio.run(first_after_ready(ours, inp.images[0]))
    print(f"  ours   first analysis after ready {first}", flush=True)
    # The steady state is measured once the background warm-up of the other models is over.
    first["all_models_warm_s"] = round(ours.ready_s + asyncio.run(wait_all_loaded(ours)), 1)
    print(f"  ours   every model warm {first['all_models_warm_s']} s after start", flush=True)
    eps = ours_endpoints(endpoints, inp.cls_keys)
    results = asyncio.run(bench_server(ours, eps, inp.images, args))
    results["_first_after_ready"] = first
    extra: dict[str, Any] = {}
    for ep in eps:
        results[ep.name]["work_done"] = asyncio.run(work_done(ours, ep, inp.images[0]))
    if not args.no_faithfulness:
        # The paths users take: explanations with their faithfulness scores, one client and
        # CLIENTS at once, compared with the design's (score-less) analysis in the report.
        faith_eps = faithfulness_endpoints(inp)
        extra = asyncio.run(bench_server(ours, faith_eps, inp.images, args))
        for ep in faith_eps:
            extra[ep.name]["work_done"] = asyncio.run(work_done(ours, ep, inp.images[0]))
    counters = asyncio.run(inference_counters(ours))
    return results, extra, counters


def measure_ours(
    inp: Inputs,
    endpoints: list[Endpoint],
    args: argparse.Namespace,
    env: dict[str, str],
    work: Path,
) -> Measured:
    ours = start_ours(inp.models_dir, work, env)
    print(f"ours ready in {ours.ready_s:.1f}s", flush=True)
    study: dict[str, Any] = {}
    cold: dict[str, Any] = {}
    try:
        results, extra, counters = _bench_ours(ours, inp, endpoints, args)
        cold["first_after_ready"] = results.pop("_first_after_ready")
        from bench.cold import first_per_model

        cold["first_per_model"] = asyncio.run(first_per_model(ours, inp.images[1]))
        if not args.no_study:
            from bench.study import bench_study

            study = bench_study(ours, inp.cls_keys)
    finally:
        peak = ours.stop()
    return Measured(ours.ready_s, peak, results, extra, counters, study, cold)


def measure_both(
    inp: Inputs, endpoints: list[Endpoint], args: argparse.Namespace
) -> tuple[Measured, Measured]:
    """The design, then ours, one after the other so they never share the CPUs."""
    work = Path(tempfile.mkdtemp(prefix="spondyscan-bench-"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    try:
        design = measure_design(inp, endpoints, args, env, work)
        ours = measure_ours(inp, endpoints, args, env, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return design, ours
