"""`spondyscan dicom-listen --server URL --api-key KEY`: receive DICOM by C-STORE, analyse each
series as a study on the server (see :mod:`backend.client.listener`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from backend.client.cli import check_credentials, connection_arguments
from backend.client.listener import DEFAULT_MAX_SERIES_BYTES, DicomListener
from backend.client.session import SpondyscanClient


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    parser.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112)")
    parser.add_argument("--ae-title", default="SPONDYSCAN", help="AE title (default SPONDYSCAN)")
    connection_arguments(parser)  # the studies belong to the key's (or token's) account
    parser.add_argument(
        "--spool",
        type=Path,
        default=Path("var/dicom-spool"),
        help="where received instances wait (default var/dicom-spool)",
    )
    parser.add_argument(
        "--stable-seconds",
        type=float,
        default=30.0,
        help="send a series once its associations closed and nothing arrived for this long "
        "(default 30)",
    )
    parser.add_argument(
        "--max-series-bytes",
        type=int,
        default=DEFAULT_MAX_SERIES_BYTES,
        help="refuse instances that would take a series past this size (default 1 GiB, the "
        "server's default study limit)",
    )
    parser.add_argument(
        "--allowed-aet",
        action="append",
        default=[],
        metavar="AET",
        help="calling AE title allowed to send (repeat for more; default: any)",
    )


def run(args: argparse.Namespace) -> int:
    check_credentials(args)
    listener = DicomListener(
        args.spool,
        args.ae_title,
        args.stable_seconds,
        max_series_bytes=args.max_series_bytes,
        allowed_aets=tuple(args.allowed_aet),
    )
    port = listener.start(args.host, args.port)
    callers = ", ".join(args.allowed_aet) or "any calling AE"
    print(f"spondyscan dicom-listen: AE {args.ae_title} on port {port} ({callers})")
    print(f"series go to {args.server}")
    print("Research use only. Not a medical device and not a diagnosis.")

    async def main() -> None:
        async with SpondyscanClient(args.server, api_key=args.api_key, token=args.token) as client:
            await listener.serve_forever(client)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(Exception):
            listener.stop()
    return 0
