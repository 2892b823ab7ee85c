"""`spondyscan dicom-listen --server URL --api-key KEY`: receive DICOM by C-STORE, analyse each
series as a study on the server (see :mod:`backend.client.listener`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from backend.client.cli import check_credentials, connection_arguments
from backend.client.listener import DicomListener
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
        default=5.0,
        help="send a series once nothing arrived for this long (default 5)",
    )


def run(args: argparse.Namespace) -> int:
    check_credentials(args)
    listener = DicomListener(args.spool, args.ae_title, args.stable_seconds)
    port = listener.start(args.host, args.port)
    print(f"spondyscan dicom-listen: AE {args.ae_title} on port {port} -> {args.server}")
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
