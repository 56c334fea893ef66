"""Configuration, read from the environment once at the edges and passed down.

Every provisioner setting has the ``PROVISIONER_`` prefix; the two Plausible settings keep the
names operators already use: ``PLAUSIBLE_API_KEY`` and ``PLAUSIBLE_BASE_URL``.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROVISIONER_", extra="ignore")

    #: SQLAlchemy URL of the status table. SQLite by default; PostgreSQL in production.
    database_url: str = "sqlite:///provisioner.db"
    #: Celery broker (redis://, amqp://). Unset means embedded mode: in-process worker threads.
    broker_url: str | None = None

    plausible_api_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("PLAUSIBLE_API_KEY")
    )
    plausible_base_url: str = Field(
        default="https://plausible.io", validation_alias=AliasChoices("PLAUSIBLE_BASE_URL")
    )
    #: Name of the quota the API key draws on; workers sharing a key share its gate. Set it per
    #: key when several keys are in use (it is a label, never derived from the key).
    quota_name: str = "default"
    #: Length of Plausible's hourly quota window; only a sandbox with a compressed hour changes it.
    plausible_hour_seconds: float = 3600.0

    http_connect_timeout: float = 5.0
    http_read_timeout: float = 15.0
    #: Bound on a whole response body (httpx only bounds each read).
    http_total_timeout: float = 20.0

    #: In-process retries of one call on a transient error: attempts and total time, both bounded.
    http_max_attempts: int = 4
    http_max_elapsed_seconds: float = 20.0
    http_backoff_initial: float = 0.25
    http_backoff_max: float = 4.0

    #: Job-level retries: a job parked after a transient failure waits base * 2**n, up to the max.
    job_backoff_base_seconds: float = 5.0
    job_backoff_max_seconds: float = 900.0
    #: A job is failed after this many claims (guards against a job that kills its worker).
    job_max_attempts: int = 25

    #: How long a claim on a running job lasts without news from its worker. The worker renews
    #: it at every checkpoint and before any API call once a quarter has passed, so it only has
    #: to outlast a quarter plus one call and its backoff (about 15 + 35 + 4 s at the defaults).
    #: When a worker dies, its jobs are taken over once their lease runs out.
    lease_seconds: float = 60.0
    task_soft_time_limit: float = 90.0
    task_time_limit: float = 120.0
    #: Redis redelivers unacknowledged messages after this long; far above the time limit.
    visibility_timeout: int = 1800

    #: The sweeper re-drives stuck jobs every so often.
    sweep_interval_seconds: float = 2.0
    #: A queued job whose message was published this long ago and never started is published again.
    redispatch_after_seconds: float = 60.0
    #: A job written but never published (the producer died) is published after this grace.
    undispatched_grace_seconds: float = 5.0

    #: Celery worker processes. The work waits on HTTP, not CPU, so more than one per core pays;
    #: each prefork process costs about 75 MB. ``provision worker --concurrency N`` overrides it.
    worker_concurrency: int = 8

    #: Embedded mode: number of in-process worker threads.
    embedded_workers: int = 8

    #: Bearer token every ``provision serve`` route requires; never logged. Empty: refuse to start
    #: unless ``dev_mode`` is set.
    api_token: SecretStr = SecretStr("")
    #: Development only: lets ``provision serve`` run without a token (no authentication at all).
    dev_mode: bool = False
    #: ``provision import``: rows per transaction (and per publish).
    import_batch_size: int = 500


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; only entry points call this, everything else is passed them."""
    return Settings()
