"""`spondyscan worker`: a distributed batch-job worker (Celery on the Redis broker).

Each worker process loads and warms the model bundles once, then runs job items from the
queue with ``--concurrency`` threads sharing those models. Start as many as you like, on as
many machines as you like, pointed at the same broker, database and artifact directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency", type=int, default=2, help="items at once in this process (default 2)"
    )
    parser.add_argument(
        "--pool",
        choices=["threads", "solo"],
        default="threads",
        help="threads share one copy of the models; solo runs one item at a time",
    )
    parser.add_argument("--broker-url", help="default: SPONDYSCAN_BROKER_URL")
    parser.add_argument("--database-url", help="default: SPONDYSCAN_DATABASE_URL")
    parser.add_argument("--data-dir", help="shared data folder (default: SPONDYSCAN_DATA_DIR)")
    parser.add_argument("--models-dir", help="model bundles (default: SPONDYSCAN_MODELS_DIR)")
    parser.add_argument("--queue", help="queue name (default: SPONDYSCAN_JOB_QUEUE)")
    parser.add_argument("--hostname", help="Celery node name (default: spondyscan-<pid>@<host>)")
    parser.add_argument("--loglevel", default="INFO", help="log level (default INFO)")
    parser.add_argument(
        "--migrate",
        action="store_true",
        help="apply database migrations first (normally the API does this)",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        help="write this file once the worker consumes the queue (for scripts, health checks)",
    )


def _settings(args: argparse.Namespace):  # -> Settings (imported lazily)
    from backend.core.config import load_settings
    from ml.clierror import CliError

    try:
        return load_settings(
            broker_url=args.broker_url,
            database_url=args.database_url,
            data_dir=args.data_dir,
            models_dir=args.models_dir,
            job_queue=args.queue,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    from ml.clierror import CliError

    if args.concurrency < 1:
        raise CliError("--concurrency must be 1 or more.")
    settings = _settings(args)

    from celery.signals import worker_ready, worker_shutdown
    from celery.utils.nodenames import default_nodename, host_format

    # Expand %h/%n/%d as Celery does, so claims name the real node ("worker@%h" in compose).
    hostname = host_format(default_nodename(args.hostname or f"spondyscan-{os.getpid()}@%h"))

    from backend.worker.celery_app import WorkerState, make_celery, set_worker_state

    ready_file: Path | None = args.ready_file

    def on_ready(**_kw: object) -> None:
        if ready_file is not None:
            from ml.fsutil import write_atomic

            write_atomic(ready_file, f"{hostname}\n".encode())
        log.info("worker %s is taking job items from queue %r", hostname, settings.job_queue)

    def on_shutdown(**_kw: object) -> None:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)

    log.info("loading models from %s", settings.models_dir)
    # The pid too: a claim must name one process even if two nodes were given one name.
    worker_id = f"celery:{hostname}:{os.getpid()}"
    state = WorkerState.start(settings, worker_id, migrate=args.migrate)
    set_worker_state(state)
    app = make_celery(settings)
    argv = [
        "worker",
        f"--concurrency={args.concurrency}",
        f"--pool={args.pool}",
        f"--queues={settings.job_queue}",
        f"--loglevel={args.loglevel}",
        f"--hostname={hostname}",
        "--prefetch-multiplier=1",
        # Workers share nothing but the broker and the store: no start-up chatter needed.
        "--without-gossip",
        "--without-mingle",
    ]
    code = 0
    try:
        app.worker_main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        set_worker_state(None)
        state.close()
        on_shutdown()
    return code


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="spondyscan worker")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
