"""Service settings from `SPONDYSCAN_*` environment variables and `.env` (via get_settings())."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "development-secret-change-me"
ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Everything the API, the inference runner and the store can be tuned by."""

    model_config = SettingsConfigDict(
        env_prefix="SPONDYSCAN_", env_file=".env", extra="ignore", populate_by_name=True
    )

    environment: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        default=None,
        description="base URL printed by `spondyscan serve` (default http://host:port)",
    )

    data_dir: Path = Path("var")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default: SQLite file in data_dir"
    )
    apply_migrations: bool = True

    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    access_token_minutes: int = Field(default=60, ge=1)
    jwt_issuer: str = "spondyscan"
    jwt_audience: str = "spondyscan-api"
    # argon2 cost; the defaults are passlib's recommended ones, tests lower them.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536

    models_dir: Path = Path("models")
    verify_model_hashes: bool = True
    warm_models: bool = True
    spa_dir: Path = ROOT / "frontend" / "dist"
    cors_origins: list[str] = Field(default_factory=list)

    # Every input is bounded before it is parsed or decoded (house rule 13).
    max_upload_bytes: int = Field(default=64 * 1024**2, ge=1, description="one image upload")
    max_request_bytes: int = Field(
        default=64 * 1024, ge=1024, description="JSON and small form bodies (auth, API keys)"
    )
    multipart_overhead_bytes: int = Field(
        default=256 * 1024, ge=0, description="room for part headers and form fields"
    )
    # Multipart forms: fields (and the bytes of each non-file part) per request, on the image,
    # study and job routes and on every other route; image routes take one file.
    upload_form_max_fields: int = Field(default=64, ge=1)
    upload_form_max_part_bytes: int = Field(default=64 * 1024, ge=1024)
    form_max_fields: int = Field(default=16, ge=1)
    form_max_part_bytes: int = Field(default=16 * 1024, ge=1024)
    max_pixels: int = Field(default=40_000_000, ge=1)
    max_frames: int = Field(default=2_000, ge=1)
    max_decoded_bytes: int = Field(
        default=512 * 1024**2, ge=1, description="decoded pixels (or inflated gzip) of one upload"
    )
    decode_concurrency: int = Field(default=2, ge=1, description="uploads decoded at once")
    decode_queue: int = Field(default=32, ge=0, description="uploads waiting to be decoded")
    max_models_per_request: int = Field(default=8, ge=1)

    # Abuse limits: rates per client address and per account, lockout, quotas.
    rate_limit_storage: str = Field(
        default="memory://", description="limits storage: memory:// or redis://host:port/db"
    )
    signup_rate: str = "10/hour"
    login_rate_per_address: str = "30/minute"
    login_rate_per_account: str = "10/minute"
    # After this many failed log-ins in a row an account is locked for lockout_seconds, doubled
    # for every further failure (at most lockout_max_seconds).
    lockout_failures: int = Field(default=5, ge=1)
    lockout_seconds: float = Field(default=30.0, gt=0)
    lockout_max_seconds: float = Field(default=3600.0, gt=0)
    max_concurrent_analyses: int = Field(default=4, ge=1, description="per user, at once")
    max_open_jobs: int = Field(default=5, ge=1, description="per user, not finished")
    storage_quota_bytes: int = Field(default=2 * 1024**3, ge=0, description="per user")
    password_hash_workers: int = Field(default=2, ge=1)
    password_hash_queue: int = Field(default=16, ge=0)

    batch_size: int = 16
    batch_wait_ms: float = 4.0
    # TensorFlow threads per operation. 1: each model call runs on one core, the models of a
    # request (segmenter, classifiers) run side by side on the cores, and a call of many images
    # is cut into one share per core (InferenceRunner.spread_outputs). On 2 cores this alone
    # made a scored analysis about 8 % faster and 8 clients' throughput about 20 % higher than
    # TensorFlow's default (every core per operation); a lone segmentation took about 13 %
    # longer (see the README's Benchmark). 0: TensorFlow's default. Set before the first model
    # loads (a process that already ran TensorFlow keeps its count, with a warning).
    inference_intra_op_threads: int = Field(default=1, ge=0)
    queue_size: int = 64
    retry_after_seconds: int = 1
    # deletion/insertion steps of the faithfulness score: 1 + (steps - 1) * 3 perturbed images
    faithfulness_steps: int = 8
    # Models costing at least this many GFLOPs a pass run a score's 4 coarse images first (and
    # stop there when nothing moves); cheaper ones run every image in one round, in bigger
    # chunks (a second round costs them more than it could save).
    faithfulness_coarse_first_gflops: float = Field(default=0.5, ge=0)
    # Serve each model with its BatchNormalizations folded into the convolutions before them
    # (same outputs within 1e-4, checked at load; ml/fold.py). False: serve the models as built.
    fold_batchnorm: bool = True
    # Ready once the per-task default models are warm; the others load and warm afterwards
    # (a request for one of them waits for it). False: every model is warm before ready.
    background_model_loading: bool = True

    # Batch jobs. "embedded": items run inside the API process on its warm models (no extra
    # services); "celery": items go to `spondyscan worker` processes through the Redis broker.
    job_backend: Literal["embedded", "celery"] = "embedded"
    broker_url: str = "redis://127.0.0.1:6379/0"
    job_queue: str = "spondyscan"
    job_concurrency: int = Field(default=2, ge=1, description="embedded: items at once")
    job_max_items: int = Field(default=1000, ge=1, le=100_000)
    job_max_bytes: int = Field(default=2 * 1024**3, description="all files of one job together")
    # A claimed item stays its worker's while the worker renews this lease; a killed worker's
    # items are taken over once it lapses.
    job_lease_seconds: float = Field(default=30.0, gt=0)
    # An item whose worker died this many times (out of memory, killed) is failed, not retried.
    job_max_attempts: int = Field(default=3, ge=1)
    # A result folder with no database row older than this was left by a killed process.
    orphan_grace_seconds: float = Field(default=600.0, ge=0)
    # Redis broker: an unacknowledged task (its worker died) is delivered again after this.
    job_visibility_timeout: int = Field(default=300, ge=1)
    job_restore_interval: float = Field(default=10.0, gt=0)

    # Whole series (POST /studies). A series holds at most this many instances (413 beyond),
    # and its files together at most study_max_bytes.
    study_max_instances: int = Field(default=1000, ge=3, le=20_000)
    study_max_bytes: int = Field(default=1024**3, ge=1)
    # Slices classified for the study-level answer (those around the midline; see ml.study).
    study_key_slices: int = Field(default=9, ge=1, le=64)
    # Uploaded instances are deleted once the study is stored; keep them this long instead
    # (seconds; 0 = delete at once). Housekeeping removes them when the time is up.
    study_input_retention_seconds: float = Field(default=0.0, ge=0)
    # Research deployments: strip the DICOM PS3.15 basic profile from the uploaded instances as
    # they arrive (UIDs kept, names/IDs/dates replaced), so nothing identifying is stored.
    deidentify: bool = False

    # DICOMweb: the PACS (QIDO-RS/WADO-RS/STOW-RS root) studies are pulled from and results
    # pushed to, e.g. http://pacs:8042/dicom-web; optional basic-auth credentials.
    dicomweb_url: str | None = None
    dicomweb_username: str | None = None
    dicomweb_password: SecretStr | None = None
    dicomweb_timeout: float = Field(default=60.0, gt=0)
    # Push every study's SEG/SR/maps back to dicomweb_url once stored (per request: push=true).
    dicomweb_push: bool = False

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        # The default secret is public (it is in this file): anyone could mint tokens with it.
        # It is tolerated only for development on a loopback address, where no one else can
        # reach the port.
        secret = self.secret_key.get_secret_value()
        exposed = self.environment != "development" or not is_loopback(self.host)
        if exposed and (secret == DEFAULT_SECRET or len(secret) < 16):
            raise ValueError(
                "SPONDYSCAN_SECRET_KEY must be set to a private value of at least 16 characters "
                f"outside development or on a non-loopback address "
                f"(environment={self.environment}, host={self.host})"
            )
        return self

    @property
    def uses_default_secret(self) -> bool:
        return self.secret_key.get_secret_value() == DEFAULT_SECRET

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file inside data_dir."""
        if self.database_url:
            url = self.database_url
            # Accept plain URLs from deployment tooling and pick the async driver ourselves.
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+asyncpg://" + url.split("://", 1)[1]
            elif url.startswith("sqlite:///"):
                url = "sqlite+aiosqlite:///" + url.split(":///", 1)[1]
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'spondyscan.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the port private to this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with command-line overrides (None means "not given").

    The one way entry points (serve, worker, admin) build their settings, so a flag and its
    ``SPONDYSCAN_*`` variable always mean the same thing. Raises ValueError with one readable
    line (no pydantic boilerplate) on invalid values.
    """
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        raise ValueError("invalid settings: " + "; ".join(parts)) from exc


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests pass their own Settings to create_app)."""
    return Settings()
