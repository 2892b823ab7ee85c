"""`spondyscan client analyze DIR --server URL --api-key KEY --out results.csv`, and
`spondyscan client study PATH --out DIR` (one whole series: a folder, zip or NIfTI).

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

from ml.vocab import MODEL_AGNOSTIC_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="client_command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "analyze",
        help="analyse every image in a folder (resumable)",
        description="Analyse every image under DIR on a running server; rerun to resume.",
    )
    p.add_argument("folder", type=Path, metavar="DIR", help="folder of images (searched deeply)")
    connection_arguments(p)
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
    p.add_argument(
        "--method",
        default=None,
        choices=MODEL_AGNOSTIC_METHODS,
        help="heatmap method (default: each model's measured best method)",
    )
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

    s = sub.add_parser(
        "study",
        help="analyse one whole series (DICOM folder, zip or NIfTI) and wait for it",
        description="Send one series to the server as a study, follow its progress, write "
        "study.json and mask.nii.gz to --out.",
    )
    s.add_argument("path", type=Path, metavar="PATH", help="folder of instances, zip or NIfTI")
    connection_arguments(s)
    s.add_argument("--out", type=Path, default=Path("study"), help="output folder (default study)")
    s.add_argument("--models", nargs="+", metavar="KEY", help="classifier keys (default: server's)")
    s.add_argument("--no-explain", dest="explain", action="store_false", help="skip heatmaps")
    s.add_argument(
        "--allow-out-of-domain",
        action="store_true",
        help="show classifier outputs even when the series is unlike the training slices",
    )
    s.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the result")
    s.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def connection_arguments(p: argparse.ArgumentParser) -> None:
    """--server, --api-key, --token: how a client program reaches its server."""
    # The client is a separate program: these variables are its own options (read here, by
    # this process), not server settings, so they bypass the server's get_settings().
    p.add_argument(
        "--server",
        default=os.environ.get("SPONDYSCAN_SERVER", "http://127.0.0.1:8000"),
        help="server URL (default: the client's SPONDYSCAN_SERVER or http://127.0.0.1:8000)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("SPONDYSCAN_API_KEY"),
        help="API key (default: the client's SPONDYSCAN_API_KEY variable, kept out of argv)",
    )
    p.add_argument("--token", help="a bearer token instead of an API key")


def _study(args: argparse.Namespace) -> int:
    import asyncio

    from backend.client.client import ClientError, SpondyscanClient
    from backend.client.study import describe, run_study
    from ml.clierror import CliError

    async def main() -> int:
        async with SpondyscanClient(
            args.server, api_key=args.api_key, token=args.token, timeout=300.0
        ) as client:
            outcome = await run_study(
                client,
                args.path,
                args.out,
                models=args.models,
                explain=args.explain,
                allow_out_of_domain=args.allow_out_of_domain,
                progress=args.progress,
                timeout=args.timeout,
            )
        for line in describe(outcome.study):
            print(line)
        print(
            f"Wrote {outcome.json_path}"
            + (f" and {outcome.mask_path}" if outcome.mask_path else "")
        )
        print("Research use only - not a diagnosis.")
        return 0 if outcome.study["status"] == "done" else 1

    try:
        return asyncio.run(main())
    except ClientError as exc:
        raise CliError(f"{args.server}: {exc.message or exc.code}") from exc
    except TimeoutError as exc:
        raise CliError(str(exc)) from exc


def check_credentials(args: argparse.Namespace) -> None:
    from ml.clierror import CliError

    if not (args.api_key or args.token):
        raise CliError("Give --api-key (or SPONDYSCAN_API_KEY) or --token.")


def run(args: argparse.Namespace) -> int:
    from ml.clierror import CliError

    check_credentials(args)
    if args.client_command == "study":
        return _study(args)
    if not args.folder.is_dir():
        raise CliError(f"{args.folder} is not a folder.")
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
        print(msg, file=sys.stderr)
        return 130
    except ClientError as exc:
        raise CliError(f"{args.server}: {exc.message or exc.code}") from exc
    print(
        f"{summary.total} files: {summary.done} analysed now, {summary.already_done} already "
        f"done, {summary.failed} refused by the server, {summary.to_retry} to retry. "
        f"Results: {summary.out}"
    )
    for line in summary.errors[:10]:
        print(f"  not done: {line}", file=sys.stderr)
    print("Research use only - not a diagnosis.")
    return 1 if summary.to_retry else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="spondyscan client")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
