"""Engines for the status table (SQLite by default, PostgreSQL in production) and its schema.

The schema is owned by the Alembic migrations in ``worker/jobs/migrations``. ``upgrade`` brings a
database to the newest revision (``provision db upgrade``; embedded mode, the demo and the tests
call it themselves); every other entry point only checks, with ``require_current``, and stops
with one line saying what to run when the database is behind.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, Table, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlmodel import create_engine

from worker.errors import ConfigurationError
from worker.jobs.revisions import head_revision
from worker.jobs.rows import SQLITE_BUSY_TIMEOUT_MS

if TYPE_CHECKING:
    from alembic.config import Config

#: The revision a database made by ``create_all`` (before migrations existed) is at.
BASELINE_REVISION = "0001"
#: How long a PostgreSQL session may sit idle inside a transaction before the server ends it.
PG_IDLE_IN_TRANSACTION_MS = 5_000
#: Rows SQLite samples per index when it gathers statistics.
SQLITE_ANALYSIS_LIMIT = 400
#: Serialises concurrent upgrades of one PostgreSQL database (any constant shared by all).
_PG_MIGRATION_LOCK = 7_142_031_501


def make_engine(database_url: str) -> Engine:
    """An engine for ``database_url``. It creates nothing: see ``upgrade``."""
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
        engine = create_engine(
            database_url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
            # A host that drops packets fails in seconds, not after the OS connect timeout.
            connect_args={"connect_timeout": 10} if database_url.startswith("postgresql") else {},
        )
        if engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _postgresql_session)
    return engine


def _postgresql_session(dbapi_connection: Any, _record: Any) -> None:
    # A process frozen inside a transaction (SIGSTOP, a paused VM) would hold its row locks,
    # and with them every other worker's takeover of its jobs, until it woke. Our transactions
    # are a few statements with nothing slow between them, so one idle this long is such a
    # process: PostgreSQL ends its session, and it finds out when it wakes (a lost claim).
    # SET rather than a startup option, which connection poolers refuse.
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET idle_in_transaction_session_timeout = {PG_IDLE_IN_TRANSACTION_MS}")
    dbapi_connection.commit()


def make_reader(engine: Engine, connections: int = 8) -> Engine:
    """An engine for single-statement reads of ``engine``'s database, asked for often (a
    job's status): autocommit, so a read is one statement, without the BEGIN and ROLLBACK
    around it (on PostgreSQL, two round trips fewer); its own pool of ``connections``."""
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "sqlite":
        reader = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            isolation_level="AUTOCOMMIT",
            pool_size=connections,
            max_overflow=connections,
            pool_reset_on_return=None,
        )
        event.listen(reader, "connect", _sqlite_pragmas)
        return reader
    # No pre-ping (a round trip per read): a connection the server dropped fails its read, the
    # pool then drops all of them, and the reader retries once (``DriverSelect.rows``).
    return create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=connections,
        max_overflow=connections,
        pool_reset_on_return=None,
        connect_args={"connect_timeout": 10} if url.startswith("postgresql") else {},
    )


class DriverSelect:
    """A SELECT asked for often, run on the driver's own cursor from ``engine``'s pool: compiled
    once, its values converted by its columns' types as ``Connection.execute`` converts them.
    It skips what SQLAlchemy does per execute (a result's metadata, built from psycopg's
    description of every column; more than half the CPU of reading one job). One statement,
    so it suits an autocommit engine (``make_reader``). Parameters go to the driver as they
    are: strings, numbers."""

    def __init__(self, engine: Engine, statement: Select[Any]) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self.engine = engine
        self.sql = compiled.string
        #: Parameter names in order for a positional driver (SQLite's ``?``); None: by name.
        self._positions = compiled.positiontup
        #: (position, converter) of each column whose type converts what the driver hands back.
        self._converters: list[tuple[int, Callable[[Any], Any]]] = []
        for position, column in enumerate(statement.selected_columns):
            convert = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if convert is not None:
                self._converters.append((position, convert))

    def rows(self, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows, read once more on a new connection when the server had dropped the pooled
        one; a SQLAlchemy ``DBAPIError`` otherwise, as from ``Connection.execute``."""
        try:
            return self._rows(params)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # The server dropped its connections (a restart): the others in the pool are as
            # dead, so they go too, and this read is made on a new one.
            self.engine.dispose()
            return self._rows(params)

    def _rows(self, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        args: Sequence[Any] | Mapping[str, Any] = params
        if self._positions is not None:
            args = [params[name] for name in self._positions]
        dialect = self.engine.dialect
        pooled = self.engine.raw_connection()
        try:
            cursor = pooled.cursor()
            try:
                cursor.execute(self.sql, args)
                fetched = cursor.fetchall()
            finally:
                cursor.close()
        except dialect.loaded_dbapi.Error as exc:
            dropped = dialect.is_disconnect(exc, pooled.dbapi_connection, None)
            if dropped:
                pooled.invalidate(exc)
            raise DBAPIError.instance(
                self.sql,
                args,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=dropped,
                dialect=dialect,
            ) from exc
        finally:
            pooled.close()
        rows = []
        for fetched_row in fetched:
            row = list(fetched_row)
            for position, convert in self._converters:
                row[position] = convert(row[position])
            rows.append(tuple(row))
        return rows


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets pollers read while a worker writes; NORMAL is durable across process crashes.
    dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below take effect
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # The query planner needs statistics: without them it admitted jobs by scanning an index of
    # every queued job instead of looking each one up by id (a second a tick at a million).
    # Sampled (analysis_limit), gathering them takes milliseconds whatever the table's size.
    cursor.execute(f"PRAGMA analysis_limit={SQLITE_ANALYSIS_LIMIT}")
    if cursor.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone() is None:
        _analyze(cursor)
    cursor.close()


def optimize(engine: Engine) -> None:
    """Refresh the query planner's statistics as the tables grow (SQLite; PostgreSQL's
    autovacuum does this itself). The sweeper calls it now and then."""
    if engine.dialect.name == "sqlite":
        # Locked by a long write: it can wait for the next time.
        with engine.begin() as connection, contextlib.suppress(OperationalError):
            connection.exec_driver_sql("ANALYZE")


def _analyze(cursor: Any) -> None:
    with contextlib.suppress(sqlite3.OperationalError):  # locked or read-only: it can wait
        cursor.execute("ANALYZE")


def _sqlite_begin(connection: Any) -> None:
    # pysqlite's own transaction handling is disabled above; state changes are single
    # conditional UPDATEs, so a plain deferred BEGIN never has to upgrade a read lock.
    connection.exec_driver_sql("BEGIN")


def _insert(table: Any, dialect: str) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(dialect)  # pragma: no cover - only SQLite and PostgreSQL


def table_of(model: type[Any]) -> Table:
    """The Core table of a SQLModel table class (its ``__table__``, which the stubs lack)."""
    table: Table = model.__table__
    return table


def insert_ignoring(table: Any, dialect: str, keys: list[str]) -> Any:
    """INSERT … ON CONFLICT (keys) DO NOTHING, on SQLite or PostgreSQL."""
    return _insert(table, dialect).on_conflict_do_nothing(index_elements=keys)


def upsert(table: Any, dialect: str, keys: list[str], update: list[str]) -> Any:
    """INSERT … ON CONFLICT (keys) DO UPDATE SET each of ``update`` to the inserted value."""
    stmt = _insert(table, dialect)
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={name: stmt.excluded[name] for name in update}
    )


# -- schema ------------------------------------------------------------------------------------


# Alembic is imported only to migrate: reading the revisions (every command that opens the table
# checks them) does without it (``worker.jobs.revisions``), which halves the start of a command
# that only reads.


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "worker.jobs:migrations")
    config.attributes["connection"] = connection
    return config


def current_revision(connection: Connection) -> str | None:
    """The database's revision (Alembic's version table); the baseline for a database made
    before migrations existed."""
    tables = inspect(connection)
    if tables.has_table("alembic_version"):
        versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        if len(versions) > 1:
            raise ConfigurationError(f"the status database has {len(versions)} schema revisions")
        if versions:
            return str(versions[0][0])
    if tables.has_table("provisioning_jobs"):
        return BASELINE_REVISION
    return None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision``; safe to run from several processes at once."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with engine.begin() as connection, _exclusive(connection):
        config = _config(connection)
        unversioned = MigrationContext.configure(connection).get_current_revision() is None
        if unversioned and inspect(connection).has_table("provisioning_jobs"):
            command.stamp(config, BASELINE_REVISION)
        command.upgrade(config, revision)


@contextlib.contextmanager
def _exclusive(connection: Connection) -> Iterator[None]:
    """Hold the database's write lock for the whole upgrade, so two upgrades run one by one."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    elif connection.dialect.name == "sqlite":
        # Writing the header takes SQLite's write lock at once, as BEGIN IMMEDIATE would.
        version = connection.exec_driver_sql("PRAGMA user_version").scalar()
        connection.exec_driver_sql(f"PRAGMA user_version = {int(version or 0)}")
    yield


def require_current(engine: Engine) -> None:
    """Raise ConfigurationError, in one line, unless the database is at the newest revision.

    A SQLite file that does not exist is reported as such, not created.
    """
    path = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not Path(path).exists():
        raise ConfigurationError(
            f"no status database at {path}: run `provision db upgrade` to create it, "
            "or set PROVISIONER_DATABASE_URL"
        )
    try:
        with engine.connect() as connection:
            current = current_revision(connection)
    except SQLAlchemyError as exc:
        where = engine.url.render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ConfigurationError(
            f"cannot use the status database {where}: {reason}; check "
            "PROVISIONER_DATABASE_URL (and that the database server is up)"
        ) from None
    head = head_revision()
    if current != head:
        raise ConfigurationError(
            f"the status database is at schema revision {current or '(empty)'}, this version "
            f"needs {head}: run `provision db upgrade`"
        )
