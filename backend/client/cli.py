"""`spondyscan client analyze DIR --server URL --api-key KEY --out results.csv`.

Uploads every image under DIR (PNG, JPEG, DICOM, NIfTI, .npy) to a running server with bounded
concurrency, shows a progress bar, waits when the server says it is busy (503 Retry-After), and
records each finished file in the CSV and its journal (``results.csv.state``), so running the
same command again uploads only what is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="client_command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "analyze",
        help="analyse every image in a folder (resumable)",
        description="Analyse every image under DIR on a running server; rerun to resume.",
    )
    p.add_argument("folder", type=Path, metavar="DIR", help="folder of images (searched deeply)")
    p.add_argument(
        "--server",
        default=os.environ.get("SPONDYSCAN_SERVER", "http://127.0.0.1:8000"),
        # The client is a separate program: these variables are its own options (read here,
        # by this process), not server settings, so they bypass the server's get_settings().
        help="server URL (default: the client's SPONDYSCAN_SERVER or http://127.0.0.1:8000)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("SPONDYSCAN_API_KEY"),
        help="API key (default: the client's SPONDYSCAN_API_KEY variable, kept out of argv)",
    )
    p.add_argument("--token", help="a bearer token instead of an API key")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results.csv"),
        help="results CSV (default results.csv); its journal is OUT.state",
    )
    p.add_argument("--concurrency", type=int, default=4, help="uploads at once (default 4)")
    p.add_argument("--models", nargs="+", metavar="KEY", help="classifier keys (default: server's)")
    p.add_argument(
        "--no-explain", dest="explain", action="store_false", help="skip the heatmaps (faster)"
    )
    p.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "eigencam"])
    p.add_argument(
        "--no-faithfulness",
        dest="faithfulness",
        action="store_false",
        help="skip the deletion/insertion score (faster)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="upload again the files the server refused last time",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ml.clierror import CliError

    if args.client_command != "analyze":  # pragma: no cover - argparse enforces the choices
        raise CliError(f"unknown client command {args.client_command!r}")
    if not args.folder.is_dir():
        raise CliError(f"{args.folder} is not a folder.")
    if not (args.api_key or args.token):
        raise CliError("Give --api-key (or SPONDYSCAN_API_KEY) or --token.")
    if args.concurrency < 1:
        raise CliError("--concurrency must be 1 or more.")

    from backend.client.client import ClientError, analyze_folder

    try:
        summary = analyze_folder(
            args.folder,
            args.out,
            server=args.server,
            api_key=args.api_key,
            token=args.token,
            timeout=args.timeout,
            concurrency=args.concurrency,
            models=args.models,
            explain=args.explain,
            method=args.method,
            faithfulness=args.faithfulness,
            retry_failed=args.retry_failed,
            progress=args.progress,
        )
    except KeyboardInterrupt:
        msg = f"\nInterrupted. Finished files are in {args.out}; run the same command to resume."
        print(msg, file=sys.stderr)  # noqa: T201
        return 130
    except ClientError as exc:
        raise CliError(f"{args.server}: {exc.message or exc.code}") from exc
    print(  # noqa: T201
        f"{summary.total} files: {summary.done} analysed now, {summary.already_done} already "
        f"done, {summary.failed} refused by the server, {summary.to_retry} to retry. "
        f"Results: {summary.out}"
    )
    for line in summary.errors[:10]:
        print(f"  not done: {line}", file=sys.stderr)  # noqa: T201
    print("Research use only - not a diagnosis.")  # noqa: T201
    return 1 if summary.to_retry else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="spondyscan client")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
