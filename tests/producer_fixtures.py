"""Fixtures for the producer tests: isolated PostgreSQL databases and Redis db 14.

Import the fixtures you use into the test module. A missing service skips locally and fails
when ``CI`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.owned import flush_owned
from tests.producer_helpers import service_unavailable

POSTGRES_URL = os.environ.get(
    "PROVISIONER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("PROVISIONER_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped afterwards."""
    name = f"prov_producers_{uuid.uuid4().hex[:10]}"
    admin_url = make_url(POSTGRES_URL)
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        service_unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Redis db 14, flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:
        service_unavailable("Redis", f"{type(exc).__name__}: {exc}")
    flush_owned(client, setting="PROVISIONER_TEST_REDIS_URL")
    try:
        yield REDIS_URL
    finally:
        flush_owned(client, setting="PROVISIONER_TEST_REDIS_URL")
        client.close()
