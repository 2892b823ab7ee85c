"""`spondyscan serve`: run the API with uvicorn (migrations, warm models, SPA) and print its URL."""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default: SPONDYSCAN_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: SPONDYSCAN_PORT or 8000)")
    parser.add_argument("--models-dir", help="model bundles folder (default: models/)")
    parser.add_argument("--data-dir", help="database and artifacts folder (default: var/)")
    parser.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from backend.core.config import load_settings
    from backend.core.logs import quiet_expected_noise
    from ml.clierror import CliError

    quiet_expected_noise()  # before the imports below set any of it off

    try:
        settings = load_settings(
            host=args.host, port=args.port, models_dir=args.models_dir, data_dir=args.data_dir
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if args.reload and (args.models_dir or args.data_dir):
        # The reloader re-imports the app in a fresh process, which can only read the
        # environment: settings objects do not cross that boundary.
        raise CliError(
            "--reload reads settings from SPONDYSCAN_* variables only: set "
            "SPONDYSCAN_MODELS_DIR / SPONDYSCAN_DATA_DIR instead of the flags."
        )
    base = settings.base_url
    print(f"spondyscan web app: {base}/app/  API: {base}  (docs: {base}/docs)", flush=True)  # noqa: T201
    print("Research use only - not a diagnosis.", flush=True)  # noqa: T201
    if args.reload:
        uvicorn.run(
            "backend.main:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            reload=True,
            log_level=args.log_level,
        )
        return 0
    from backend.main import create_app

    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="spondyscan serve")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
