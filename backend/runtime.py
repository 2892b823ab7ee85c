"""The long-lived parts of a spondyscan process: database, artifact store, warm models.

:func:`start_runtime` is the one start-up path: the API's lifespan calls it, and so does a
Celery worker (``sweep=False``: the API already cleans the shared store). Both then pass the
same :class:`Runtime` to the same use cases, so a job item is processed exactly like an upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.core.config import Settings
from backend.core.logs import quiet_expected_noise, quiet_value_loggers
from backend.core.pools import BoundedPool, PerKeyLimit
from backend.db import migrate
from backend.db.session import make_engine, make_sessionmaker
from backend.inference.registry import (
    ModelEntry,
    ModelRegistry,
    discover_registry,
    load_entry,
)
from backend.inference.runner import InferenceRunner, configure_threads
from backend.storage.artifacts import ArtifactStore
from backend.storage.rate_limits import RateLimits

if TYPE_CHECKING:
    from ml.domain import DomainReference

log = logging.getLogger(__name__)


@dataclass
class Guards:
    """What keeps one caller or one input from taking the service down for everyone."""

    rates: RateLimits
    hashing: BoundedPool  # argon2, apart from everything else
    decoding: BoundedPool  # uploads are decoded here, a few at a time
    analyses: PerKeyLimit  # analyses in flight per user

    @classmethod
    def from_settings(cls, s: Settings) -> Guards:
        return cls(
            rates=RateLimits(s.rate_limit_storage),
            hashing=BoundedPool(
                "password-hash",
                s.password_hash_workers,
                s.password_hash_queue,
                busy_message="Too many log-ins and sign-ups at once; retry in a moment.",
            ),
            decoding=BoundedPool(
                "decode",
                s.decode_concurrency,
                s.decode_queue,
                busy_message="The server is busy decoding other uploads; retry in a moment.",
            ),
            analyses=PerKeyLimit(s.max_concurrent_analyses),
        )

    def close(self) -> None:
        self.hashing.close()
        self.decoding.close()


@dataclass
class Runtime:
    """What every request and job item shares: settings, database, files and warm models."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    store: ArtifactStore
    guards: Guards
    registry: ModelRegistry | None = None
    runner: InferenceRunner | None = None
    # The applicability-domain reference (models_dir/domain_reference.npz), when installed.
    domain: DomainReference | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # Loads and warms the non-default models after the service is ready.
    loader: asyncio.Task[None] | None = None

    async def database_ok(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - readiness reports any failure as "not reachable"
            log.warning("database not reachable", exc_info=True)
            return False

    @property
    def models_ready(self) -> bool:
        """Models are installed and every per-task default is loaded and warm."""
        reg = self.registry
        if reg is None or self.runner is None or not reg.models:
            return False
        return all(reg.models[k].ready for k in reg.default_keys())

    async def close(self) -> None:
        if self.loader is not None and not self.loader.done():
            self.loader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.loader
        if self.runner is not None:
            await self.runner.close()
        self.guards.close()
        await self.engine.dispose()


async def start_runtime(
    settings: Settings,
    *,
    load_models: bool = True,
    migrate_db: bool | None = None,
    sweep: bool = True,
) -> Runtime:
    """Migrate the database, open the store, load and warm the models.

    Args:
        settings: the process' settings.
        load_models: load and warm the bundles (tests of the store alone skip it).
        migrate_db: apply migrations first; default ``settings.apply_migrations``.
        sweep: remove abandoned staging folders of the store (the API does; workers
            starting by the dozen need not).
    """
    quiet_value_loggers()
    quiet_expected_noise()
    t0 = time.perf_counter()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if settings.apply_migrations if migrate_db is None else migrate_db:
        # Alembic's async env runs its own event loop: give it a thread.
        await asyncio.to_thread(migrate.upgrade, url)
    timings = {"migrations_s": time.perf_counter() - t0}
    engine = make_engine(url)
    store = ArtifactStore(settings.artifacts_dir)
    if sweep:
        # Only abandoned (old) entries: replicas sharing the store have uploads in flight.
        await asyncio.to_thread(store.sweep)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        store=store,
        guards=Guards.from_settings(settings),
        timings=timings,
    )
    if load_models:
        try:
            await _load_models(runtime)
        except BaseException:
            await engine.dispose()
            raise
    runtime.timings["startup_s"] = time.perf_counter() - t0
    return runtime


def _load_domain(models_dir: Path) -> DomainReference | None:
    """The applicability-domain reference shipped with the models, or None (with a warning)."""
    from ml.domain import REFERENCE_FILE, DomainReference

    path = Path(models_dir) / REFERENCE_FILE
    if not path.is_file():
        log.warning(
            "no %s in %s: images are checked by their header only", REFERENCE_FILE, models_dir
        )
        return None
    try:
        return DomainReference.load(path)
    except (OSError, ValueError, KeyError) as exc:
        log.error("the domain reference %s cannot be used: %s", path, exc)
        return None


async def _load_models(runtime: Runtime) -> None:
    """Discover the bundles, load and warm the per-task defaults, then the rest.

    With ``settings.background_model_loading`` the service is ready once the defaults are warm;
    the other models load and warm one at a time in a background task (requests for one of them
    wait for it). Otherwise every model is loaded and warm before this returns.
    """
    s = runtime.settings
    t0 = time.perf_counter()
    threads = await asyncio.to_thread(configure_threads, s.inference_intra_op_threads)
    registry = await asyncio.to_thread(discover_registry, s.models_dir)
    runner = InferenceRunner(
        registry,
        max_batch=s.batch_size,
        max_wait_ms=s.batch_wait_ms,
        queue_size=s.queue_size,
        retry_after=s.retry_after_seconds,
        faithfulness_steps=s.faithfulness_steps,
    )
    runner.intra_op_threads = threads
    runtime.registry, runtime.runner = registry, runner
    runtime.domain = _load_domain(s.models_dir)
    defaults = [registry.models[k] for k in registry.default_keys()]
    first = defaults if s.background_model_loading else list(registry.models.values())
    await _load_and_warm(runtime, first)
    runtime.timings["load_models_s"] = time.perf_counter() - t0
    runtime.timings["warm_s"] = runner.warm_seconds
    rest = [e for e in list(registry.models.values()) if not e.loaded.done()]
    if rest:
        runtime.loader = asyncio.create_task(
            _load_and_warm(runtime, rest, one_by_one=True), name="load-models"
        )
    if not registry.models:
        log.warning("no models loaded from %s: inference requests will answer 503", s.models_dir)
    log.info(
        "ready with %s (%d still loading, %d failed) in %.1fs",
        ", ".join(k for k, e in registry.models.items() if e.ready) or "no models",
        len(rest),
        len(registry.errors),
        time.perf_counter() - t0,
    )


async def _load_and_warm(
    runtime: Runtime, entries: list[ModelEntry], *, one_by_one: bool = False
) -> None:
    """Load each entry's weights (off the event loop) and warm it; failures drop the entry."""
    s, registry, runner = runtime.settings, runtime.registry, runtime.runner
    assert registry is not None and runner is not None
    verify = s.verify_model_hashes
    if not one_by_one:
        # Classifiers first (tracing their explanation paths is the longest warm-up): each one
        # warms on its own thread while the next one loads.
        entries = sorted(entries, key=lambda e: e.task != "classification")
    warming: list[asyncio.Task[None]] = []
    for entry in entries:
        if await asyncio.to_thread(
            load_entry, registry, entry, verify=verify, fold=s.fold_batchnorm
        ):
            if one_by_one:
                await _warm(runner, [entry], s.warm_models)
            else:
                warming.append(asyncio.create_task(_warm(runner, [entry], s.warm_models)))
    await asyncio.gather(*warming)
    if one_by_one:
        log.info("every model loaded: %s", ", ".join(registry.keys()) or "none")


async def _warm(runner: InferenceRunner, entries: list[ModelEntry], warm: bool) -> None:
    if warm:
        await runner.warm(entries)
        return
    for entry in entries:
        if not entry.loaded.done():
            entry.loaded.set_result(True)
