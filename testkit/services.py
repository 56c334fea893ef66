"""The machine's services as the tests use them: Redis, PostgreSQL and RabbitMQ on their usual
ports (or wherever ``PROVISIONER_TEST_*_URL`` points), probed once per run.

A service that is down skips its tests locally with the reason; with ``CI`` set it fails them
instead, so CI can never go green by skipping. The tests flush only what is theirs: a Redis
database is flushed only when it is empty or carries the mark the tests leave in it, so pointing
them at a database in real use fails loudly instead of wiping it. PostgreSQL databases are made
per test with random names, and only those are dropped.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from worker.jobs.pgurl import psycopg_conninfo

MARK = "plausible-provisioner:tests-own-this-db"


def flush_owned(client: Any, *, setting: str) -> int:
    """FLUSHDB, if the database is ours; returns how many keys were there (the mark aside)."""
    keys = int(client.dbsize())
    if keys and not client.exists(MARK):
        where = client.connection_pool.connection_kwargs
        pytest.fail(
            f"Redis db {where.get('db', 0)} on {where.get('host')}:{where.get('port')} holds "
            f"{keys} key(s) the tests did not put there; refusing to flush it. Point {setting} "
            "at an empty database.",
            pytrace=False,
        )
    client.flushdb()
    client.set(MARK, "1")
    return keys - 1 if keys else 0


REDIS_URL = os.environ.get("PROVISIONER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


POSTGRES_URL = os.environ.get(
    "PROVISIONER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


AMQP_URL = os.environ.get("PROVISIONER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def unavailable(service: str, reason: str) -> None:
    message = f"{service} is not available ({reason})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the whole integration tier", pytrace=False)
    pytest.skip(message)


_service_errors: dict[str, str | None] = {}


def _check(service: str, probe: Callable[[], None]) -> None:
    if service not in _service_errors:
        try:
            probe()
            _service_errors[service] = None
        except Exception as exc:
            _service_errors[service] = f"{type(exc).__name__}: {exc}"
    error = _service_errors[service]
    if error is not None:
        unavailable(service, error)


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


def _probe_redis() -> None:
    with contextlib.closing(redis_client()) as client:
        client.ping()


def _pg_admin() -> Any:
    import psycopg

    return psycopg.connect(libpq_conninfo(POSTGRES_URL), autocommit=True, connect_timeout=3)


def libpq_conninfo(postgres_url: str) -> str:
    """libpq's conninfo for a PostgreSQL URL (SQLAlchemy's form), converted as the product
    converts it, for a psycopg connection of a test's or a benchmark's own."""
    conninfo = psycopg_conninfo(postgres_url)
    if conninfo is None:
        raise ValueError(f"not a PostgreSQL URL: {postgres_url}")
    return conninfo


def _probe_postgres() -> None:
    with _pg_admin() as conn:
        conn.execute("SELECT 1")


def _probe_rabbitmq() -> None:
    from kombu import Connection

    with Connection(AMQP_URL, connect_timeout=3) as conn:
        conn.ensure_connection(max_retries=1)


@contextlib.contextmanager
def owned_redis() -> Iterator[str]:
    """The tests' Redis database, flushed before and after."""
    _check("Redis", _probe_redis)
    with contextlib.closing(redis_client()) as client:
        flush_owned(client, setting="PROVISIONER_TEST_REDIS_URL")
        yield REDIS_URL
        flush_owned(client, setting="PROVISIONER_TEST_REDIS_URL")


def flush_redis() -> int:
    """FLUSHDB on the tests' Redis database; returns how many keys were there."""
    with contextlib.closing(redis_client()) as client:
        return flush_owned(client, setting="PROVISIONER_TEST_REDIS_URL")


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped afterwards."""
    _check("PostgreSQL", _probe_postgres)
    name = f"provisioner_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def owned_rabbitmq() -> Iterator[str]:
    """RabbitMQ, with the provisioner queue purged before and deleted after."""
    _check("RabbitMQ", _probe_rabbitmq)
    from kombu import Connection

    def drop_queue() -> None:
        with Connection(AMQP_URL) as conn, contextlib.suppress(Exception):
            conn.default_channel.queue_delete("provisioner")

    drop_queue()
    yield AMQP_URL
    drop_queue()
