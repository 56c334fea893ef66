"""Configuration, read from the environment once at the edges and passed down.

Every provisioner setting has the ``PROVISIONER_`` prefix; the two Plausible settings keep the
names operators already use: ``PLAUSIBLE_API_KEY`` and ``PLAUSIBLE_BASE_URL``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([dhms]?)\s*")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}


def parse_duration(value: Any) -> Any:
    """``30d``, ``12h``, ``90m``, ``45s`` or a number of seconds, as a timedelta; anything else
    is left to pydantic (an ISO 8601 duration such as ``P30D`` works too)."""
    if isinstance(value, str) and (match := _DURATION.fullmatch(value.lower())):
        return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    return value


#: URL schemes of the stores and brokers the provisioner runs on, and how to write them.
DATABASE_FORMS = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
BROKER_FORMS = "redis://HOST:PORT/DB, rediss://…, amqp://USER:PASSWORD@HOST:PORT/VHOST or amqps://…"
_DATABASE_SCHEMES = ("sqlite", "postgresql+psycopg")
_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "memory")  # memory: tests
#: Spellings seen in the wild, and what to write instead.
_DATABASE_ALIASES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    "psql": "postgresql+psycopg",
    "sqlite3": "sqlite",
}


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def check_database_url(url: str) -> str:
    scheme = _scheme(url)
    if scheme in _DATABASE_SCHEMES:
        return url
    if scheme in _DATABASE_ALIASES:
        better = _DATABASE_ALIASES[scheme]
        raise ValueError(f"write {better}:// instead of {scheme}:// (the driver installed)")
    shown = f"{scheme}://" if scheme else "a URL without a scheme"
    raise ValueError(f"{shown} is not a supported status database; use {DATABASE_FORMS}")


def check_broker_url(url: str | None) -> str | None:
    if url is None or url == "":
        return None
    scheme = _scheme(url)
    if scheme in _BROKER_SCHEMES:
        return url
    shown = f"{scheme}://" if scheme else "a URL without a scheme"
    raise ValueError(f"{shown} is not a supported broker; use {BROKER_FORMS}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROVISIONER_", extra="ignore", env_file=".env", env_file_encoding="utf-8"
    )

    #: SQLAlchemy URL of the status table. SQLite by default; PostgreSQL in production.
    database_url: Annotated[str, AfterValidator(check_database_url)] = "sqlite:///provisioner.db"
    #: Celery broker (redis://, amqp://). Unset means embedded mode: in-process worker threads.
    broker_url: Annotated[str | None, AfterValidator(check_broker_url)] = None

    plausible_api_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("PLAUSIBLE_API_KEY")
    )
    plausible_base_url: str = Field(
        default="https://plausible.io", validation_alias=AliasChoices("PLAUSIBLE_BASE_URL")
    )
    #: The ``default`` account's quota (§4 of the API reference); the accounts file sets others.
    hourly_limit: int = Field(default=600, gt=0)
    burst_limit: int = Field(default=60, gt=0)
    burst_seconds: float = Field(default=10.0, gt=0)
    #: Calls per hour left unspent for the team's other users of the key (Stats API scripts...).
    quota_reserve: int = Field(default=0, ge=0)
    #: Length of Plausible's hourly window; only a sandbox with a compressed hour changes it.
    hour_seconds: float = Field(default=3600.0, gt=0)
    #: TOML file naming further accounts (Plausible teams or keys), each with its own quota.
    accounts_file: Path | None = None
    #: Share of every window kept for interactive jobs until shortly before the window ends.
    interactive_reserve: float = Field(default=0.1, ge=0, le=1)
    #: Unused interactive reserve goes to bulk jobs at least this long (plus the guard) before a
    #: burst window ends; longer when jobs have lately taken longer to finish.
    reserve_release_seconds: float = Field(default=0.1, ge=0)
    #: How far Plausible's clock (plus a request's transit) may be from ours: a request sent this
    #: close to a window boundary may be counted on either side, so it is charged to both.
    quota_guard_seconds: float = Field(default=0.6, ge=0)
    #: The scheduler admits waiting jobs into the quota when woken (a job enqueued, retried,
    #: finished or handed back; a window opening), at most this often.
    schedule_interval_seconds: float = Field(default=0.1, gt=0)
    #: With nothing to wake it, the scheduler still looks this often: the safety net for a
    #: missed wake-up (``worker.wakeups``). With no wake-up channel across processes (a broker
    #: other than Redis and a status database other than PostgreSQL), it looks every
    #: ``schedule_interval_seconds``.
    idle_poll_seconds: float = Field(default=5.0, gt=0)
    #: How wake-ups cross processes (``worker.wakeups``): the broker's Redis, the PostgreSQL
    #: status database (LISTEN/NOTIFY), none, or auto: Redis when the broker is, else PostgreSQL
    #: when the status database is.
    wakeups: Literal["auto", "redis", "postgres", "none"] = "auto"
    #: At most this many dispatched jobs wait in the broker for a worker; the rest wait as rows,
    #: where new signups still go first and a taken-over job is not stuck behind a backlog.
    dispatch_ahead: int = Field(default=32, gt=0)

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

    #: How long a claim on a running job lasts without news from its worker. A thread of the
    #: worker's process renews it every third of this (and every checkpoint does), so it can be
    #: short: when a worker dies, its jobs are taken over once their lease runs out.
    lease_seconds: float = Field(default=10.0, gt=0)
    #: A run hands its slot back at its next call after this long and the job resumes from its
    #: checkpoint, so no time limit ever stops a job that is progressing (0: no budget). Keep it
    #: below PROVISIONER_TASK_SOFT_TIME_LIMIT.
    job_time_budget_seconds: float = Field(default=60.0, ge=0)
    task_soft_time_limit: float = 90.0
    task_time_limit: float = 120.0
    #: Redis redelivers unacknowledged messages after this long; far above the time limit.
    visibility_timeout: int = 1800

    #: The sweeper re-drives stuck jobs every so often.
    sweep_interval_seconds: float = 1.0
    #: A dispatched job that no worker claimed this long after its message went out is
    #: published again, at its own priority, when the lane of the broker's queue its message
    #: waits in (``worker.dispatch.Lane``) holds fewer messages than such jobs (its message is
    #: lost); the wait doubles with each message, so duplicates stay rare.
    redispatch_after_seconds: float = 5.0

    #: Finished jobs (and their delivered webhooks) older than this are deleted by the sweeper,
    #: a few thousand at a time; batches keep their counts and the inventory is never pruned.
    #: ``30d``, ``12h``, ``90m``, ``45s`` or seconds; ``0`` keeps every job.
    job_retention: Annotated[timedelta, BeforeValidator(parse_duration)] = timedelta(days=30)

    #: Jobs one ``provision worker`` runs at once. The work waits on HTTP, not CPU, so more than
    #: one per core pays. ``provision worker --concurrency N`` overrides it.
    worker_concurrency: int = 8
    #: ``threads``: one process runs the jobs in threads, with its scheduler and sweeper as
    #: threads too (about 110 MB). ``prefork``: a process per job slot (about 75 MB each), with
    #: Celery's time limits, and the scheduler in a process of its own.
    #: ``provision worker --pool`` overrides it.
    worker_pool: Literal["threads", "prefork"] = "threads"
    #: Every process that runs jobs writes a heartbeat this often (``provision workers``).
    heartbeat_seconds: float = Field(default=1.0, gt=0)
    #: A process whose heartbeat has not changed for this long is taken for dead: any live
    #: worker hands its running jobs back at once, without waiting for their leases to end.
    heartbeat_timeout_seconds: float = Field(default=3.0, gt=0)

    #: Embedded mode: number of in-process worker threads.
    embedded_workers: int = 8

    #: Bearer token every ``provision serve`` route requires; never logged. Empty: refuse to start
    #: unless ``dev_mode`` is set.
    api_token: SecretStr = SecretStr("")
    #: Development only: lets ``provision serve`` run without a token (no authentication at all).
    dev_mode: bool = False
    #: Log lines as JSON objects or plain text; ``auto``: JSON unless stderr is a terminal.
    log_format: Literal["auto", "json", "text"] = "auto"
    #: Show tracebacks instead of one-line errors (``--debug`` does the same).
    debug: bool = False
    #: Port a worker serves Prometheus metrics on (0: none). ``provision serve`` serves
    #: ``/metrics`` on its own port.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: Redis holding the signup stream ``provision consume`` reads (``--redis`` overrides it).
    stream_redis_url: str | None = None
    #: ``provision import``: rows per transaction.
    import_batch_size: int = 500

    #: Completion webhooks (``worker.webhooks``): the HMAC-SHA256 key deliveries are signed with
    #: (comma-separated, newest first, while rotating: each signs); never logged, never stored.
    #: Required by a worker once an account without its own ``webhook_secret_env`` has a
    #: ``webhook_url``.
    webhook_secret: SecretStr = SecretStr("")
    #: Comma-separated hosts a callback URL may name (``*.example.com``: any subdomain); empty:
    #: any host. Checked when an event or the accounts file names a URL, and before every send.
    webhook_allowed_hosts: str = ""
    #: Let webhooks reach loopback, private, link-local and other non-public addresses
    #: (``worker.egress``): for development and tests only.
    webhook_allow_private: bool = False
    #: Bound on connecting, sending and each read of one delivery; redirects are never followed.
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    #: Attempts (each a POST) before a delivery is given up as failed.
    webhook_max_attempts: int = Field(default=10, ge=1)
    #: A failed attempt is retried after base * 2**(attempts - 1) seconds, up to the max (the
    #: second half of each wait is jitter).
    webhook_backoff_base_seconds: float = Field(default=10.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=1800.0, gt=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; only entry points call this, everything else is passed them."""
    return Settings()


def settings_error(exc: ValidationError) -> str:
    """The first problem of a ValidationError of Settings, as one line naming the variable."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "?"
    field = Settings.model_fields.get(name)
    alias = field.validation_alias if field is not None else None
    variable = (
        alias.choices[0] if isinstance(alias, AliasChoices) else f"PROVISIONER_{name.upper()}"
    )
    value = error.get("input")
    # URLs may carry a password: never echoed, like keys, tokens and secrets.
    secret = any(word in name for word in ("key", "token", "secret", "url"))
    shown = "" if secret else f" (got {value!r})"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{variable}: {message}{shown}"
