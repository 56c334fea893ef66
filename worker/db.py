"""Engines for the status table: SQLite (default, embedded) or PostgreSQL (production)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine

from worker import models

#: How long a SQLite writer waits for another process's lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(database_url: str, *, create_tables: bool = True) -> Engine:
    """An engine for ``database_url``; creates the status table if it does not exist."""
    if database_url.startswith("sqlite"):
        engine = create_engine(
            database_url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            # Pooled: closing the last connection to a WAL database checkpoints it, which made
            # every short transaction pay for a checkpoint. Engines are made per process, after
            # any fork, so a pooled connection never crosses a fork.
            pool_size=16,
            max_overflow=16,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        engine = create_engine(database_url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    if create_tables:
        tables = [models.ProvisioningJob.__table__, models.QuotaGateRow.__table__]  # type: ignore[attr-defined]
        SQLModel.metadata.create_all(engine, tables=tables)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets pollers read while a worker writes; NORMAL is durable across process crashes.
    dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below take effect
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # pysqlite's own transaction handling is disabled above; state changes are single
    # conditional UPDATEs, so a plain deferred BEGIN never has to upgrade a read lock.
    connection.exec_driver_sql("BEGIN")
