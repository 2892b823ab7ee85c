"""`spondyscan serve`: run the API with uvicorn (migrations, warm models, SPA) and print its URL."""

from __future__ import annotations

import argparse
import logging
import os
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

    from backend.core.config import Settings

    overrides = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "models_dir": args.models_dir,
            "data_dir": args.data_dir,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        from ml.cli import CliError

        raise CliError(str(exc).splitlines()[-1] if str(exc) else "invalid settings") from exc
    # Pass the chosen values on to the app factory (uvicorn imports it by name).
    for key, value in overrides.items():
        os.environ[f"SPONDYSCAN_{key.upper()}"] = str(value)
    from backend.core.config import get_settings

    get_settings.cache_clear()
    print(f"spondyscan API: {settings.base_url}  (docs: {settings.base_url}/docs)", flush=True)  # noqa: T201
    print("Research use only - not a diagnosis.", flush=True)  # noqa: T201
    uvicorn.run(
        "backend.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        reload=args.reload,
        log_level=args.log_level,
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="spondyscan serve")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
