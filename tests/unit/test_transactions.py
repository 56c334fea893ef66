"""Enqueueing in the app's own transaction on every kind of connection a web app holds.

DB-API connections (``sqlite3``, ``psycopg``) and async SQLAlchemy (``AsyncSession``,
``AsyncConnection``; a ``psycopg.AsyncConnection``) on PostgreSQL: the job exists if and only if
the transaction commits, a key makes one job however often it is enqueued, the row reads back
through JobStore exactly like one SQLAlchemy wrote, and a producer killed right after its commit
leaves a queued job that the scheduler dispatches.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from producers.api import Provisioner, sync_url
from testkit.databases import migrated_engine
from testkit.events import event
from testkit.fakes import RecordingDispatcher
from testkit.sandbox_process import REPO_ROOT
from testkit.services import libpq_conninfo
from worker.errors import IdempotencyConflictError, InvalidRequestError
from worker.jobs.models import ProvisioningJob
from worker.jobs.specs import Progress
from worker.jobs.states import JobStatus, Priority
from worker.jobs.store import JobStore
from worker.runtime import make_scheduler
from worker.settings import Settings
from worker.times import as_utc, utcnow


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    store = JobStore(migrated_engine(database_url))
    yield store
    store.engine.dispose()


def dbapi_connect(database_url: str) -> Any:
    """A plain DB-API connection to the database, as a web app without SQLAlchemy holds one."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return sqlite3.connect(str(url.database))
    return psycopg.connect(libpq_conninfo(database_url))


def async_url(database_url: str) -> str:
    return (
        make_url(database_url)
        .set(drivername="postgresql+psycopg_async")
        .render_as_string(hide_password=False)
    )


def jobs_with_key(store: JobStore, key: str) -> list[ProvisioningJob]:
    with Session(store.engine) as session:
        return list(
            session.exec(select(ProvisioningJob).where(ProvisioningJob.idempotency_key == key))
        )


def raw_columns(store: JobStore, key: str) -> tuple[Any, ...]:
    """The stored text of the JSON and datetime columns, and their storage types."""
    if store.engine.dialect.name == "sqlite":
        query = (
            "SELECT request, progress, permits, created_at, typeof(created_at), typeof(request) "
            "FROM provisioning_jobs WHERE idempotency_key = :key"
        )
    else:
        query = (
            "SELECT request::text, progress::text, permits::text, "
            "pg_typeof(created_at)::text, pg_typeof(request)::text "
            "FROM provisioning_jobs WHERE idempotency_key = :key"
        )
    with store.engine.connect() as connection:
        row = connection.execute(text(query), {"key": key}).one()
    return tuple(row)


def assert_waiting_for_the_scheduler(store: JobStore, job: ProvisioningJob) -> None:
    assert (job.status, job.dispatched_at, job.dispatch_count) == (JobStatus.queued, None, 0)
    waiting = store.ready_jobs(["default"], Priority.interactive, limit=10)
    assert [candidate.id for candidate in waiting] == [job.id]


def one_scheduler_tick(store: JobStore) -> list[str]:
    """What a worker's scheduler dispatches on its next tick."""
    dispatcher = RecordingDispatcher()
    settings = Settings(database_url=str(store.engine.url), accounts_file=None)
    make_scheduler(settings, store, dispatcher).tick()
    return dispatcher.published


# -- DB-API connections ------------------------------------------------------------------------


def test_dbapi_commit_makes_one_job_stored_exactly_as_sqlalchemy_stores_it(
    store: JobStore, database_url: str
) -> None:
    provisioner = Provisioner(store)
    before = utcnow()
    with Session(store.engine) as session:
        by_sqlalchemy = provisioner.enqueue(session, event(1, id="by-sqlalchemy"))
        session.commit()
    conn = dbapi_connect(database_url)
    try:
        job_id = provisioner.enqueue(conn, event(1, id="by-dbapi"), batch_id="B1")
        assert store.find("by-dbapi") is None  # not visible before the commit
        conn.commit()
    finally:
        conn.close()
    [job] = jobs_with_key(store, "by-dbapi")
    [reference] = jobs_with_key(store, "by-sqlalchemy")
    assert job.id == job_id != by_sqlalchemy
    # Read back through JobStore: the same values as the row SQLAlchemy wrote.
    assert job.spec == reference.spec
    assert (job.request, job.fingerprint) == (reference.request, reference.fingerprint)
    assert job.progress == Progress() == reference.progress
    assert (job.operation, job.domain, job.account) == (
        reference.operation,
        reference.domain,
        reference.account,
    )
    assert (job.priority, job.batch_id, job.attempts) == (Priority.interactive, "B1", 0)
    created = as_utc(job.created_at)
    assert created is not None
    assert before - timedelta(seconds=1) <= created <= utcnow()
    assert as_utc(job.updated_at) == created
    # And byte for byte: the JSON text, the datetime format and the storage types.
    ours, theirs = raw_columns(store, "by-dbapi"), raw_columns(store, "by-sqlalchemy")
    if store.engine.dialect.name == "sqlite":
        assert ours[:3] == theirs[:3]
        assert len(ours[3]) == len(theirs[3]) == len("2026-01-01 00:00:00.000000")
        assert ours[3][10] == theirs[3][10] == " "
        assert ours[4:] == theirs[4:] == ("text", "text")
    else:
        assert ours == theirs
        assert ours[3:] == ("timestamp with time zone", "json")
    status = provisioner.status("by-dbapi")
    assert status is not None
    assert (status.id, status.status) == (job_id, "queued")


def test_dbapi_rollback_leaves_no_job(store: JobStore, database_url: str) -> None:
    provisioner = Provisioner(store)
    conn = dbapi_connect(database_url)
    try:
        provisioner.enqueue(conn, event(1))
        conn.rollback()
        conn.commit()  # a later, empty commit must not resurrect the rolled-back row
    finally:
        conn.close()
    assert store.find("evt_1") is None
    assert store.ready_jobs(["default"], Priority.interactive, limit=10) == []


def test_dbapi_same_key_makes_one_job_and_errors_leave_the_transaction_usable(
    store: JobStore, database_url: str
) -> None:
    provisioner = Provisioner(store)
    conn = dbapi_connect(database_url)
    try:
        first = provisioner.enqueue(conn, event(1))
        assert provisioner.enqueue(conn, event(1)) == first  # same transaction
        conn.commit()
        assert provisioner.enqueue(conn, event(1)) == first  # a later one
        with pytest.raises(IdempotencyConflictError) as caught:
            provisioner.enqueue(conn, event(1, domain="other.example.com"))
        assert caught.value.job_id == first
        with pytest.raises(InvalidRequestError):
            provisioner.enqueue(conn, event(2, domain="bad domain!"))
        second = provisioner.enqueue(conn, event(3))  # no failed statement on PostgreSQL
        conn.commit()
    finally:
        conn.close()
    assert [job.id for job in jobs_with_key(store, "evt_1")] == [first]
    assert [job.id for job in jobs_with_key(store, "evt_3")] == [second]


def test_a_sqlite3_connection_that_read_first_gets_the_stale_snapshot_error(
    tmp_path: Path,
) -> None:
    from producers.api import StaleSnapshotError

    path = tmp_path / "stale.db"
    store = JobStore(migrated_engine(f"sqlite:///{path}"))
    provisioner = Provisioner(store)
    conn = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM provisioning_jobs").fetchall()  # a read snapshot
        with Session(store.engine) as other:  # another writer commits meanwhile
            provisioner.enqueue(other, event(2))
            other.commit()
        with pytest.raises(StaleSnapshotError, match="BEGIN IMMEDIATE"):
            provisioner.enqueue(conn, event(1))
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        job_id = provisioner.enqueue(conn, event(1))  # retried: enqueue first
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert store.get(job_id) is not None
    store.engine.dispose()


def test_what_enqueue_cannot_write_in_is_refused_clearly(store: JobStore) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    provisioner = Provisioner(store)
    with pytest.raises(TypeError, match="sqlite3 or psycopg connection"):
        provisioner.enqueue(object(), event(1))  # type: ignore[arg-type]
    async_engine = create_async_engine("postgresql+psycopg_async://nobody@127.0.0.1:1/none")
    with pytest.raises(TypeError, match="aenqueue"):
        provisioner.enqueue(AsyncSession(async_engine), event(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncSession"):
        asyncio.run(provisioner.aenqueue(object(), event(1)))  # type: ignore[arg-type]
    assert store.find("evt_1") is None


CRASHING_DBAPI_PRODUCER = textwrap.dedent(
    """
    import os, sys
    from producers.api import Provisioner
    from tests.unit.test_transactions import dbapi_connect
    from worker.jobs.db import make_engine
    from worker.jobs.store import JobStore

    provisioner = Provisioner(JobStore(make_engine(sys.argv[1])))
    conn = dbapi_connect(sys.argv[1])
    provisioner.enqueue(conn, {"id": "evt_crash", "domain": "crash.example.com"})
    if sys.argv[2] == "before-commit":
        os._exit(4)
    conn.commit()
    os._exit(3)  # killed right after the commit, before anything else could run
    """
)


def run_producer(script: str, database_url: str, when: str) -> int:
    return subprocess.run(
        [sys.executable, "-c", script, database_url, when], cwd=REPO_ROOT, timeout=60
    ).returncode


def test_a_dbapi_producer_killed_after_its_commit_leaves_a_job_the_scheduler_dispatches(
    store: JobStore, database_url: str
) -> None:
    assert run_producer(CRASHING_DBAPI_PRODUCER, database_url, "before-commit") == 4
    assert jobs_with_key(store, "evt_crash") == []  # died before commit: no job invented
    assert run_producer(CRASHING_DBAPI_PRODUCER, database_url, "after-commit") == 3
    assert run_producer(CRASHING_DBAPI_PRODUCER, database_url, "after-commit") == 3  # retried
    [job] = jobs_with_key(store, "evt_crash")
    assert_waiting_for_the_scheduler(store, job)
    assert one_scheduler_tick(store) == [job.id]
    dispatched = store.get(job.id)
    assert dispatched is not None
    assert dispatched.dispatched_at is not None


# -- async SQLAlchemy and psycopg on PostgreSQL -------------------------------------------------


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[JobStore]:
    store = JobStore(migrated_engine(postgres_url))
    yield store
    store.engine.dispose()


def test_async_session_commit_rollback_and_duplicates(
    pg_store: JobStore, postgres_url: str
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    provisioner = Provisioner(pg_store)

    async def scenario() -> tuple[str, str]:
        engine = create_async_engine(async_url(postgres_url))
        try:
            async with AsyncSession(engine) as session:
                first = await provisioner.aenqueue(session, event(1))
                assert await provisioner.aenqueue(session, event(1)) == first
                assert await asyncio.to_thread(pg_store.find, "evt_1") is None  # uncommitted
                await session.commit()
            async with AsyncSession(engine) as session:
                await provisioner.aenqueue(session, event(2))
                await session.rollback()
            async with AsyncSession(engine) as session:
                assert await provisioner.aenqueue(session, event(1)) == first
                with pytest.raises(IdempotencyConflictError):
                    await provisioner.aenqueue(session, event(1, domain="other.example.com"))
                third = await provisioner.aenqueue(session, event(3))  # still usable
                await session.commit()
            return first, third
        finally:
            await engine.dispose()

    first, third = asyncio.run(scenario())
    [job] = jobs_with_key(pg_store, "evt_1")
    assert job.id == first
    assert jobs_with_key(pg_store, "evt_2") == []  # rolled back
    assert [j.id for j in jobs_with_key(pg_store, "evt_3")] == [third]
    assert (job.status, job.dispatched_at) == (JobStatus.queued, None)
    assert raw_columns(pg_store, "evt_1")[3:] == ("timestamp with time zone", "json")


def test_async_connection_and_psycopg_async_connection(
    pg_store: JobStore, postgres_url: str
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    provisioner = Provisioner(pg_store)

    async def scenario() -> list[str]:
        engine = create_async_engine(async_url(postgres_url))
        try:
            async with engine.begin() as connection:  # commits at the end of the block
                via_sqlalchemy = await provisioner.aenqueue(connection, event(1))
            async with engine.connect() as connection:
                await provisioner.aenqueue(connection, event(2))
                await connection.rollback()
        finally:
            await engine.dispose()
        async with await psycopg.AsyncConnection.connect(libpq_conninfo(postgres_url)) as conn:
            via_psycopg = await provisioner.aenqueue(conn, event(3))
            assert await provisioner.aenqueue(conn, event(3)) == via_psycopg
            with pytest.raises(IdempotencyConflictError):
                await provisioner.aenqueue(conn, event(3, domain="other.example.com"))
            await conn.commit()
        return [via_sqlalchemy, via_psycopg]

    ids = asyncio.run(scenario())
    assert [j.id for j in jobs_with_key(pg_store, "evt_1") + jobs_with_key(pg_store, "evt_3")] == (
        ids
    )
    assert jobs_with_key(pg_store, "evt_2") == []
    assert raw_columns(pg_store, "evt_3")[3:] == ("timestamp with time zone", "json")


CRASHING_ASYNC_PRODUCER = textwrap.dedent(
    """
    import asyncio, os, sys
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from producers.api import Provisioner

    provisioner = Provisioner.from_url(sys.argv[1])  # the app's own (async) URL

    async def main():
        engine = create_async_engine(sys.argv[1])
        async with AsyncSession(engine) as session:
            await provisioner.aenqueue(session, {"id": "evt_crash", "domain": "crash.example.com"})
            if sys.argv[2] == "before-commit":
                os._exit(4)
            await session.commit()
            os._exit(3)  # killed right after the commit

    asyncio.run(main())
    """
)


def test_an_async_producer_killed_after_its_commit_leaves_a_job_the_scheduler_dispatches(
    pg_store: JobStore, postgres_url: str
) -> None:
    url = async_url(postgres_url)
    assert run_producer(CRASHING_ASYNC_PRODUCER, url, "before-commit") == 4
    assert jobs_with_key(pg_store, "evt_crash") == []
    assert run_producer(CRASHING_ASYNC_PRODUCER, url, "after-commit") == 3
    [job] = jobs_with_key(pg_store, "evt_crash")
    assert_waiting_for_the_scheduler(pg_store, job)
    assert one_scheduler_tick(pg_store) == [job.id]


# -- Provisioner.from_url ----------------------------------------------------------------------


def test_from_url_takes_the_apps_url_sync_or_async_and_an_accounts_file(
    tmp_path: Path, postgres_url: str
) -> None:
    assert sync_url(async_url(postgres_url)) == postgres_url
    assert sync_url("sqlite+aiosqlite:///app.db") == "sqlite:///app.db"
    assert sync_url(postgres_url) == postgres_url
    migrated_engine(postgres_url).dispose()
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[accounts.agency]\napi_key_env = "AGENCY_KEY"\n')
    provisioner = Provisioner.from_url(async_url(postgres_url), accounts_file=accounts)
    try:
        assert provisioner.store.engine.url.drivername == "postgresql+psycopg"
        assert provisioner.accounts is not None
        assert set(provisioner.accounts) == {"default", "agency"}
        conn = dbapi_connect(postgres_url)
        with conn:  # psycopg: commits at the end of the block
            provisioner.enqueue(conn, {"id": "a", "domain": "a.example.com", "account": "agency"})
            with pytest.raises(InvalidRequestError) as raised:
                provisioner.enqueue(conn, {"domain": "c.example.com", "account": "nobody"})
            assert raised.value.field == "account"
        job = provisioner.store.find("a")
        assert job is not None
        assert job.account == "agency"
        assert provisioner.status("a") is not None
    finally:
        provisioner.store.engine.dispose()


def test_from_url_checks_the_schema_unless_told_not_to(tmp_path: Path) -> None:
    from worker.errors import ConfigurationError

    url = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(ConfigurationError, match="provision db upgrade"):
        Provisioner.from_url(url)
    unchecked = Provisioner.from_url(url, check_schema=False)  # connects to nothing
    assert not (tmp_path / "none.db").exists()
    unchecked.store.engine.dispose()


def test_postgresql_ends_a_session_left_idle_inside_a_transaction(postgres_url: str) -> None:
    """A process frozen mid-transaction (SIGSTOP) must not hold its row locks, and with them
    another worker's takeover of its jobs, until it wakes: each session asks the server to end
    it once it idles inside a transaction."""
    from worker.jobs.db import PG_IDLE_IN_TRANSACTION_MS, make_engine

    engine = make_engine(postgres_url)
    try:
        with engine.connect() as connection:
            setting = connection.execute(text("SHOW idle_in_transaction_session_timeout"))
            assert setting.scalar_one() == f"{PG_IDLE_IN_TRANSACTION_MS // 1000}s"
    finally:
        engine.dispose()
