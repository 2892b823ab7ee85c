"""bench/results.json and the printed comparison of the two sides."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench.inputs import Inputs
from bench.scenarios import CLIENTS, Endpoint, Measured


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def results_header(inp: Inputs) -> dict[str, Any]:
    """The machine, the models and the notes: what the figures that follow were measured on."""
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "models": {
            "segmentation": inp.seg_key,
            "classifiers": inp.cls_keys,
            "flops": {
                inp.seg_key: inp.seg_flops,
                **dict(zip(inp.cls_keys, inp.cls_flops, strict=True)),
            },
        },
        "matmul_peak_flops": inp.peak,
        "notes": [
            "design: one request at a time, model.predict per model, eager GradientTape "
            "Grad-CAM with a per-request gradient model, box focus, files + SQLite",
            "ours: compiled models warmed at start-up, micro-batched; explain with box focus "
            "and no faithfulness score for a like-for-like comparison",
        ],
    }


def server_results(design: Measured, ours: Measured) -> dict[str, Any]:
    return {
        "design": {
            "start_to_ready_s": round(design.ready_s, 2),
            "peak_rss_mib": design.peak_rss_mib,
            "endpoints": design.endpoints,
        },
        "ours": {
            "start_to_ready_s": round(ours.ready_s, 2),
            "peak_rss_mib": ours.peak_rss_mib,
            "endpoints": ours.endpoints,
            "with_faithfulness": ours.with_faithfulness,
            "inference_counters": ours.inference_counters,
            "study": ours.study,
            "cold": ours.cold,
        },
    }


def ratios_table(
    endpoints: list[Endpoint], design: Measured, ours: Measured, peak: float
) -> dict[str, Any]:
    """Ours against the design per endpoint, printed as a table as well as returned."""
    load_key = f"{CLIENTS}_clients"
    ratios: dict[str, Any] = {}
    print("\nendpoint          p50 design/ours   throughput ours/design   FLOP share design/ours")
    for ep in endpoints:
        d, o = design.endpoints[ep.name], ours.endpoints[ep.name]
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
    return ratios


def scored_ratios(design: Measured, ours: Measured) -> dict[str, Any]:
    """The scored paths (ours with faithfulness) against the design's score-less analysis."""
    load_key = f"{CLIENTS}_clients"
    d = design.endpoints["analysis"]
    out: dict[str, Any] = {}
    for name in ("analysis+faithfulness", "default_analysis"):
        o = ours.with_faithfulness.get(name)
        if not o or load_key not in o:
            continue
        out[name] = {
            "p50_ms": o["one_client"]["p50_ms"],
            "design_analysis_p50_ms": d["one_client"]["p50_ms"],
            "p50_speedup": ratio(d["one_client"]["p50_ms"], o["one_client"]["p50_ms"]),
            "throughput_gain": ratio(o[load_key]["throughput_rps"], d[load_key]["throughput_rps"]),
        }
        print(
            f"{name:<22} p50 {o['one_client']['p50_ms']} ms vs design analysis "
            f"{d['one_client']['p50_ms']} ms ({out[name]['p50_speedup']}x); "
            f"{CLIENTS} clients {out[name]['throughput_gain']}x the design's throughput"
        )
    return out


def targets(ratios: dict[str, Any], scored: dict[str, Any]) -> dict[str, bool]:
    out = {
        "analysis_p50_at_most_one_third": (ratios["analysis"]["p50_speedup"] or 0) >= 3.0,
        "analysis_throughput_at_least_4x": (ratios["analysis"]["throughput_gain"] or 0) >= 4.0,
    }
    if "analysis+faithfulness" in scored:
        s = scored["analysis+faithfulness"]
        out["scored_analysis_p50_at_most_one_quarter"] = (s["p50_speedup"] or 0) >= 4.0
        out["scored_analysis_throughput_at_least_4x"] = (s["throughput_gain"] or 0) >= 4.0
    return out


def cold_targets(ours: Measured) -> dict[str, bool]:
    """Ready within 12 s; the first request after ready, and the first to each non-default
    model, no slower than twice its own p50."""
    out = {"start_to_ready_at_most_12_s": ours.ready_s <= 12.0}
    first = ours.cold.get("first_after_ready")
    if first:
        out["first_request_after_ready_at_most_2x_p50"] = first["ratio"] <= 2.0
    per_model = ours.cold.get("first_per_model") or {}
    if per_model:
        out["first_request_per_model_at_most_2x_p50"] = all(
            m["ratio"] <= 2.0 for m in per_model.values()
        )
    return out


def add_comparison(
    results: dict[str, Any],
    endpoints: list[Endpoint],
    design: Measured,
    ours: Measured,
    peak: float,
) -> None:
    """Fill in both servers' figures, the ratios and the targets, printing the summary."""
    results.update(server_results(design, ours))
    results["ratios"] = ratios_table(endpoints, design, ours, peak)
    results["scored"] = scored_ratios(design, ours)
    results["targets"] = targets(results["ratios"], results["scored"])
    if ours.study:
        results["targets"]["study_77_slices_at_most_15_s"] = ours.study["within_target"]
    results["targets"].update(cold_targets(ours))
    print(
        f"\nstart to ready: design {design.ready_s:.1f}s, ours {ours.ready_s:.1f}s; "
        f"peak memory: design {design.peak_rss_mib or 0:.0f} MiB, "
        f"ours {ours.peak_rss_mib or 0:.0f} MiB"
    )
    print(f"targets: {results['targets']}")


def write_results(results: dict[str, Any], out: Path, started: float) -> None:
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out} ({results['bench_seconds']}s)")
