"""The `spondyscan` console script: the science commands plus serve | worker | client |
dicom-listen | admin.

Service commands import their modules lazily so `spondyscan prepare` never loads FastAPI.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ml import cli as ml_cli

SERVICE_COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("backend.serve", "run the API (migrations, warm models, SPA) and print its URL"),
    "worker": ("backend.worker.main", "run a distributed batch-job worker (Celery on Redis)"),
    "client": ("backend.client.cli", "batch client for a running server (analyze a folder)"),
    "dicom-listen": (
        "backend.client.listen_cli",
        "receive DICOM by C-STORE and analyse each series as a study on a server",
    ),
    "admin": ("backend.admin_cli", "grant or revoke the admin role of an existing account"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spondyscan",
        description="spondyscan: explainable AS research on spine MRI (research use only).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    ml_cli.add_commands(sub)
    for name, (module, help_text) in SERVICE_COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        mod.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ml_cli.configure_logging(args.verbose)
    return ml_cli.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
