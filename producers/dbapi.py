"""DB-API connections for ``Provisioner.enqueue``: which SQLAlchemy dialect a connection the
caller hands in (``sqlite3``, ``psycopg``, Django's ``connection``) speaks, and its statements
compiled for it, every value through its column type's bind processor, so the row is stored
exactly as SQLAlchemy would store it."""

from __future__ import annotations

import functools
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import create_engine
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable


class DBAPIConnection(Protocol):
    """A DB-API 2 connection (``sqlite3``, ``psycopg``) or Django's ``connection``."""

    def cursor(self) -> Any: ...


def is_async(tx: object) -> bool:
    module = type(tx).__module__
    return module.startswith("sqlalchemy.ext.asyncio") or type(tx).__name__.startswith("Async")


@dataclass(frozen=True)
class DBAPITarget:
    """A DB-API connection's SQLAlchemy dialect, set to its driver's parameter style."""

    dialect: Dialect

    def compile(self, stmt: Executable, row: dict[str, Any] | None) -> tuple[str, list[Any]]:
        """The SQL and positional parameters SQLAlchemy would send: each value through its
        column type's bind processor (JSON serialised, datetimes in the dialect's format)."""
        dialect = self.dialect
        compiled: Any = cast(Any, stmt).compile(
            dialect=dialect, column_keys=list(row) if row is not None else None
        )
        values = compiled.construct_params(row)
        params = []
        for name in compiled.positiontup:
            value = values[name]
            process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            params.append(process(value) if process is not None else value)
        return str(compiled.string), params

    def rows(
        self, tx: DBAPIConnection, stmt: Executable, row: dict[str, Any] | None
    ) -> Sequence[Sequence[Any]]:
        sql, params = self.compile(stmt, row)
        cursor = tx.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()


@functools.cache
def _dialect(url: str, paramstyle: str) -> Dialect:
    """A dialect to compile with; the engine never connects."""
    return create_engine(url, paramstyle=paramstyle).dialect


def dbapi_target(tx: object, *, asynchronous: bool = False) -> DBAPITarget:
    psycopg = sys.modules.get("psycopg")  # a psycopg connection implies psycopg is imported
    if asynchronous:
        if psycopg is not None and isinstance(tx, psycopg.AsyncConnection):
            return DBAPITarget(_dialect("postgresql+psycopg://", "format"))
        raise TypeError(
            f"aenqueue needs an AsyncSession, an AsyncConnection or a psycopg AsyncConnection, "
            f"not {type(tx).__name__}"
        )
    if isinstance(tx, sqlite3.Connection):
        return DBAPITarget(_dialect("sqlite://", "qmark"))
    if psycopg is not None and isinstance(tx, psycopg.Connection):
        return DBAPITarget(_dialect("postgresql+psycopg://", "format"))
    vendor = getattr(tx, "vendor", None)  # Django's connection (or its proxy)
    if vendor is not None and hasattr(tx, "ensure_connection"):
        # Django's cursors take %s placeholders on every backend (SQLite's converts them).
        if vendor == "sqlite":
            return DBAPITarget(_dialect("sqlite://", "format"))
        if vendor == "postgresql":
            driver = getattr(getattr(tx, "Database", None), "__name__", "psycopg")
            name = "psycopg2" if driver.startswith("psycopg2") else "psycopg"
            return DBAPITarget(_dialect(f"postgresql+{name}://", "format"))
        raise TypeError(f"the status table needs SQLite or PostgreSQL, not Django's {vendor!r}")
    raise TypeError(
        "enqueue needs a SQLAlchemy Session or Connection, a sqlite3 or psycopg connection, or "
        f"Django's connection, not {type(tx).__name__}"
    )
