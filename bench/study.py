"""The whole-series scenario of `make bench`: one 77-slice series through ``POST /studies``.

Every slice segmented, the key slices classified by each benchmarked classifier and explained
(Grad-CAM, the central key slice with its faithfulness score), the 3D mask and every layer
stored; timed from the upload to the finished study as a client sees it (polling every 0.1 s).
The series is the real ``myosegmentum-01`` (77 slices, 224x224) from ``../shared`` when present,
else a synthetic phantom series of the same size. Peak memory is the server's resident set
sampled every 50 ms during the run, and its growth over the resident set before it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.inputs import ROOT
from bench.servers import Server

TARGET_S = 15.0
SLICES = 77
REAL = ROOT.parent / "shared" / "data" / "studies" / "myosegmentum-01" / "dicom"


def series_files() -> tuple[str, list[tuple[str, bytes]]]:
    """(what it is, the DICOM instances) of the benchmark series."""
    if REAL.is_dir():
        files = [(p.name, p.read_bytes()) for p in sorted(REAL.iterdir()) if p.is_file()]
        return f"real myosegmentum-01 ({len(files)} slices)", files
    from ml.data.synthetic_series import dicom_series, phantom_series

    series = phantom_series(SLICES, 224, seed=1)
    return f"synthetic phantom ({SLICES} slices, 224x224)", dicom_series(series, seed=1)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class _RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mib(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def _one(server: Server, files: list[tuple[str, bytes]], models: list[str]) -> dict:
    data: dict[str, Any] = {"models": models, "explain": "true", "allow_out_of_domain": "true"}
    parts = [("files", (name, body, "application/dicom")) for name, body in files]
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=120) as c:
        t0 = time.perf_counter()
        r = await c.post("/studies", files=parts, data=data)
        r.raise_for_status()
        accepted = time.perf_counter() - t0
        study = r.json()
        while study["status"] not in ("done", "failed", "cancelled"):
            await asyncio.sleep(0.1)
            study = (await c.get(f"/studies/{study['id']}")).json()
        wall = time.perf_counter() - t0
    if study["status"] != "done":
        raise RuntimeError(f"the benchmark study ended {study['status']}: {study.get('error')}")
    result = study["result"]
    return {
        "wall_s": round(wall, 2),
        "accepted_s": round(accepted, 2),
        "slices": len(result["slices"]),
        "key_slices": len(result["segmentation"]["key_slices"]),
        "heatmaps": sum(len(s["heatmaps"]) for s in result["slices"]),
        "server_timings_ms": result["timings_ms"],
    }


def bench_study(server: Server, models: list[str], runs: int = 2) -> dict[str, Any]:
    """Run the study ``runs`` times; the best wall time is the figure against the target."""
    what, files = series_files()
    before = _rss_mib(server.proc.pid)
    with _RssSampler(server.proc.pid) as rss:
        results = [asyncio.run(_one(server, files, models)) for _ in range(runs)]
    best = min(r["wall_s"] for r in results)
    out = {
        "series": what,
        "models": models,
        "runs": results,
        "best_wall_s": best,
        "target_s": TARGET_S,
        "within_target": best <= TARGET_S,
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": round(rss.peak, 1),
        "peak_growth_mib": round(rss.peak - before, 1),
    }
    print(
        f"  ours   study ({what}): {', '.join(str(r['wall_s']) for r in results)} s "
        f"(target {TARGET_S} s); peak {out['peak_rss_mib']} MiB (+{out['peak_growth_mib']})",
        flush=True,
    )
    return out
