"""Building the pipeline for a process from settings: the one place that wires it together."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from worker.db import make_engine, require_current, upgrade
from worker.errors import ConfigurationError
from worker.plausible import PlausibleClient
from worker.quota import QuotaGate
from worker.retrying import RetryPolicy
from worker.service import Pipeline
from worker.settings import Settings
from worker.store import JobStore


def make_client(settings: Settings) -> PlausibleClient:
    if not settings.plausible_api_key.get_secret_value():
        raise ConfigurationError("PLAUSIBLE_API_KEY is not set: workers cannot call Plausible")
    return PlausibleClient(
        base_url=settings.plausible_base_url,
        api_key=settings.plausible_api_key.get_secret_value(),
        connect_timeout=settings.http_connect_timeout,
        read_timeout=settings.http_read_timeout,
        total_timeout=settings.http_total_timeout,
        hour_seconds=settings.plausible_hour_seconds,
    )


def make_store(
    settings: Settings, engine: Engine | None = None, *, migrate: bool = False
) -> JobStore:
    """The status table. ``migrate`` upgrades its schema first (embedded mode); otherwise a
    database behind this version's schema stops the process with a ConfigurationError."""
    engine = engine or make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    else:
        require_current(engine)
    return JobStore(engine)


def make_pipeline(settings: Settings, store: JobStore) -> Pipeline:
    return Pipeline(
        store=store,
        client=make_client(settings),
        policy=RetryPolicy.from_settings(settings),
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.job_max_attempts,
        gate=QuotaGate(store.engine, name=settings.quota_name),
    )
