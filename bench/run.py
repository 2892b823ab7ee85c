"""`make bench`: the design-style serving path against ours, same weights, same images, one run.

Both sides run as real HTTP servers in their own processes and are driven by the same client:

* design: ``bench.design`` - one request at a time, ``model.predict`` per model, eager
  ``GradientTape`` Grad-CAM, files + SQLite (what the design's Flask app did);
* ours: ``spondyscan serve`` - the FastAPI service with warm compiled models and micro-batching.

Measured for /classify, /segment, /explain and the full analysis: p50/p95 latency with one client,
throughput (and p50) with 8 concurrent clients; per server: time from process start to ready and
peak resident memory; achieved FLOP rate as a share of a matrix-multiply peak measured in the same
run. Results go to bench/results.json; ratios are printed. Runtime is bounded by --budget-s per
phase. Ours also runs one 77-slice series through ``POST /studies`` (``bench.study``): time
from upload to finished study against its 15 s target, and the server's peak memory meanwhile.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench.inputs import ROOT, prepare_inputs
from bench.report import add_comparison, results_header, write_results
from bench.scenarios import CLIENTS, base_endpoints, measure_both


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    parser.add_argument(
        "--no-study", action="store_true", help="skip the 77-slice whole-series scenario"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.load_requests, args.no_faithfulness = 3, CLIENTS, True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    inp = prepare_inputs(args.models_dir)
    endpoints = base_endpoints(inp)
    results = results_header(inp)
    design, ours = measure_both(inp, endpoints, args)
    add_comparison(results, endpoints, design, ours, inp.peak)
    write_results(results, args.out, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
