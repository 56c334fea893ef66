"""The Python API for web apps: enqueue inside your own transaction, read a job's status.

    provisioner = Provisioner.from_settings()   # or Provisioner.from_url(DATABASE_URL)
    with Session(engine) as session:            # your SQLAlchemy / SQLModel session
        session.add(account)
        job_id = provisioner.enqueue(session, {"id": "signup-42", "domain": "shop.example.com"})
        session.commit()                        # the job exists iff this commits
    provisioner.status(job_id)                  # a ``provisioner_types.Job``, or None

``enqueue`` takes whatever holds your transaction: a SQLAlchemy Session or Connection, a DB-API
connection (``sqlite3``, ``psycopg``; ``producers.dbapi``) or Django's ``django.db.connection``;
``await aenqueue(...)`` takes an AsyncSession, an AsyncConnection or a ``psycopg``
AsyncConnection. The status table must be in the database that transaction writes to; for a
status table in another database, use the HTTP service (``provision serve``) instead.

The job row is written in the caller's transaction: it is the outbox. Once the transaction
commits, the workers' scheduler sees the row and dispatches it as the quota allows (an
interactive job within a fraction of a second); a rollback discards it. Nothing is published
from this process, so there is no window between commit and publish in which a crash could lose
or duplicate anything.

Every kind of transaction runs the same two statements, built once by SQLAlchemy
(``_enqueue_steps``): the INSERT … ON CONFLICT DO NOTHING RETURNING of ``worker.jobs.intake`` and, on a
conflict, the SELECT of the existing job. A DB-API connection gets them compiled for its dialect,
with every value passed through its column type's bind processor, so the row is stored exactly as
SQLAlchemy would store it.

SQLite only: a transaction that has READ before ``enqueue`` holds a read snapshot, and if another
writer committed since, SQLite cannot upgrade it to a write lock (``busy_timeout`` does not help:
waiting cannot make the snapshot current). ``enqueue`` then raises StaleSnapshotError at once.
Call ``enqueue`` before any read in the transaction, or begin the transaction with
``BEGIN IMMEDIATE``; either way roll back and retry the whole transaction on the error.
PostgreSQL has no such restriction.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlmodel import col, select

from producers.dbapi import DBAPIConnection as DBAPIConnection  # re-exported
from producers.dbapi import dbapi_target, is_async
from producers.events import Event, parse_domain, parse_event
from producers.plans.api import PlansAPI
from provisioner_types import Batch, Job, Site
from worker.errors import IdempotencyConflictError, InvalidRequestError
from worker.jobs import view
from worker.jobs.intake import (
    BatchOf,
    check_same_request,
    insert_batch,
    insert_ignoring_duplicates,
    job_values,
)
from worker.jobs.models import ProvisioningJob
from worker.jobs.specs import JobRequest
from worker.jobs.states import Priority
from worker.jobs.store import JobStore
from worker.quota.report import Reporter
from worker.settings import Settings
from worker.times import utcnow

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    from producers.plans.refresh import LiveReader

log = logging.getLogger(__name__)


class StaleSnapshotError(RuntimeError):
    """SQLite refused ``enqueue``'s write in a transaction that had read before it."""


#: What ``enqueue`` writes in: the caller's transaction.
Transaction = Session | Connection | DBAPIConnection

#: Async SQLAlchemy drivers and the sync driver the Provisioner's own store uses instead.
#: Sites read per query when ``Provisioner.sites`` walks the inventory.
SITES_PAGE = 500

_SYNC_DRIVERS = {
    "postgresql+psycopg_async": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
    "sqlite+aiosqlite": "sqlite",
}


class Provisioner(PlansAPI):
    """Enqueue and look up provisioning jobs on the status table ``store`` uses; make, read and
    apply plans of a desired state (``producers.plans.api``).

    ``accounts`` are the account names events may use (None: any); ``reporter`` gives batches
    their expected completion; ``refresher`` reads sites live for ``plan(refresh=True)``.
    ``Provisioner.from_settings()`` and ``Provisioner.from_url()`` build all four from the same
    settings as the ``provision`` command.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        accounts: Collection[str] | None = None,
        reporter: Reporter | None = None,
        refresher: LiveReader | None = None,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.reporter = reporter
        self.refresher = refresher

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Provisioner:
        """From ``PROVISIONER_*`` settings (the environment by default): the status database
        (which must be at this version's schema: ``provision db upgrade``) and the accounts."""
        return cls._build(settings or Settings())

    @classmethod
    def from_url(
        cls,
        database_url: str,
        *,
        accounts_file: str | Path | None = None,
        settings: Settings | None = None,
        check_schema: bool = True,
    ) -> Provisioner:
        """On the status table in ``database_url`` (your app's database URL; an async driver's
        URL, ``postgresql+psycopg_async://`` or ``sqlite+aiosqlite://``, is fine too), with the
        accounts of ``accounts_file``; every other setting from ``settings`` (the
        ``PROVISIONER_*`` environment by default).

        ``check_schema``: raise ConfigurationError now, saying what to run, unless the status
        table is at this version's schema (it connects once to check). Without it, nothing
        connects until a status lookup.
        """
        from worker.jobs.db import make_engine

        url = sync_url(database_url)
        return cls.from_engine(
            make_engine(url),
            accounts_file=accounts_file,
            settings=(settings or Settings()).model_copy(update={"database_url": url}),
            check_schema=check_schema,
        )

    @classmethod
    def from_engine(
        cls,
        engine: Engine,
        *,
        accounts_file: str | Path | None = None,
        settings: Settings | None = None,
        check_schema: bool = True,
    ) -> Provisioner:
        """``from_url`` on an engine you made (sync; for status lookups only: ``enqueue`` writes
        through the transaction you pass it)."""
        update: dict[str, Any] = {}
        if accounts_file is not None:
            update["accounts_file"] = Path(accounts_file)
        return cls._build((settings or Settings()).model_copy(update=update), engine, check_schema)

    @classmethod
    def _build(
        cls, settings: Settings, engine: Engine | None = None, check_schema: bool = True
    ) -> Provisioner:
        from producers.plans.refresh import LiveReader
        from worker.jobs.db import make_engine
        from worker.runtime import make_accounts, make_reporter, make_store

        engine = engine or make_engine(settings.database_url)
        if check_schema:
            try:
                store = make_store(settings, engine)
            except Exception:
                engine.dispose()  # no pooled connection left open behind the error
                raise
        else:
            store = JobStore(engine)
        return cls(
            store,
            accounts=make_accounts(settings).names,
            reporter=make_reporter(settings, store),
            refresher=LiveReader(settings, store),
        )

    def enqueue(
        self,
        tx: Transaction,
        item: Mapping[str, Any] | Event | JobRequest,
        *,
        key: str | None = None,
        batch_id: str | None = None,
        priority: Priority = Priority.interactive,
    ) -> str:
        """Write the job in ``tx``'s transaction and return its id.

        ``tx`` is a SQLAlchemy Session (flushed first) or Connection, a DB-API connection
        (``sqlite3.Connection``, ``psycopg.Connection``) or Django's ``connection``; the status
        table must be in its database. ``item`` is a signup event (validated here;
        InvalidRequestError names the bad field), a parsed Event, or a JobRequest. The same key
        with the same request returns the existing job's id; with a different request,
        IdempotencyConflictError. Neither error, nor a duplicate, leaves a failed statement in the
        transaction. ``priority`` is the class of an event that names none. On SQLite, raises
        StaleSnapshotError if the transaction read before this call and another writer has
        committed since (see the module docstring).
        """
        steps = self._steps(item, key=key, batch_id=batch_id, priority=priority)
        if isinstance(tx, Session | Connection):
            bind = tx.get_bind() if isinstance(tx, Session) else tx
            return _drive(steps, bind.dialect.name, lambda stmt, row: _sa_rows(tx, stmt, row))
        if is_async(tx):
            raise TypeError(f"{type(tx).__name__} is asynchronous: use `await aenqueue(...)`")
        target = dbapi_target(tx)
        return _drive(steps, target.dialect.name, lambda stmt, row: target.rows(tx, stmt, row))

    async def aenqueue(
        self,
        tx: AsyncSession | AsyncConnection | psycopg.AsyncConnection[Any],
        item: Mapping[str, Any] | Event | JobRequest,
        *,
        key: str | None = None,
        batch_id: str | None = None,
        priority: Priority = Priority.interactive,
    ) -> str:
        """``enqueue`` for asyncio: in an AsyncSession's or AsyncConnection's transaction
        (SQLAlchemy's asyncio extension), or a ``psycopg.AsyncConnection``'s."""
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

        steps = self._steps(item, key=key, batch_id=batch_id, priority=priority)
        if isinstance(tx, AsyncSession | AsyncConnection):
            if isinstance(tx, AsyncSession):
                dialect = tx.sync_session.get_bind().dialect
            else:
                dialect = tx.dialect

            async def run_sa(stmt: Executable, row: dict[str, Any] | None) -> list[Any]:
                result = await (tx.execute(stmt, [row]) if row is not None else tx.execute(stmt))
                return list(result.all())

            return await _adrive(steps, dialect.name, run_sa)
        target = dbapi_target(tx, asynchronous=True)

        async def run_dbapi(stmt: Executable, row: dict[str, Any] | None) -> list[Any]:
            sql, params = target.compile(stmt, row)
            async with tx.cursor() as cursor:
                await cursor.execute(sql, params)
                return list(await cursor.fetchall())

        return await _adrive(steps, target.dialect.name, run_dbapi)

    def status(self, ref: str) -> Job | None:
        """A job by id or idempotency key, None if there is none: the ``Job`` that
        ``GET /jobs/{ref}`` answers (``.model_dump(mode="json")`` is ``provision status --json``).
        """
        job = self.store.find(ref)
        return view.job_view(job) if job is not None else None

    def batch(self, batch_id: str) -> Batch | None:
        """A batch, None if no job has this batch id: the ``Batch`` that
        ``GET /batches/{batch_id}`` answers, with ``expected_completion``."""
        summary = self.store.batch_summary(batch_id)
        if summary.total == 0:
            return None
        eta = self.reporter.batch_eta(batch_id) if self.reporter is not None else None
        return view.batch_view(summary, eta)

    def sites(self, account: str | None = None) -> Iterator[Site]:
        """The inventory: every site the provisioner knows it owns in Plausible (of ``account``,
        if given), by domain, with its goals and shared links (``GET /sites``), read a page at
        a time."""
        accounts = [account] if account is not None else None
        after: tuple[str, str] | None = None
        while page := self.store.sites(accounts, limit=SITES_PAGE, after=after):
            yield from (view.site_view(found) for found in self.store.details(page))
            after = (page[-1].domain, page[-1].account)

    def site(self, domain: str) -> list[Site]:
        """The site ``domain`` (in any spelling Plausible accepts) in the inventory: one per
        account that has it, none if no job of ours made or adopted it."""
        return [view.site_view(found) for found in self.store.site(parse_domain(domain))]

    def _steps(
        self,
        item: Mapping[str, Any] | Event | JobRequest,
        *,
        key: str | None,
        batch_id: str | None,
        priority: Priority,
    ) -> Callable[[str], _Steps]:
        """Validate now (before anything touches the transaction); the statements to run."""
        parsed = self._as_event(item, key)
        now = utcnow()
        batch = BatchOf(batch_id, batch_id, "api") if batch_id else BatchOf.of_day("api", now)
        row = job_values(
            parsed.request,
            key=parsed.key,
            batch_id=batch.id,
            now=now,
            priority=parsed.priority or priority,
        )
        return functools.partial(_enqueue_steps, batch.row(now), row)

    def _as_event(self, item: Mapping[str, Any] | Event | JobRequest, key: str | None) -> Event:
        if isinstance(item, JobRequest):
            parsed = Event(key, item)
        elif isinstance(item, Event):
            parsed = Event(key or item.key, item.request, item.priority)
        else:
            event = parse_event(dict(item), accounts=self.accounts)
            parsed = Event(key or event.key, event.request, event.priority)
        account = parsed.request.account
        if self.accounts is not None and account not in self.accounts:
            raise InvalidRequestError(f"unknown account {account!r}", field="account")
        return parsed


def sync_url(database_url: str) -> str:
    """``database_url`` with an async SQLAlchemy driver replaced by its sync counterpart."""
    url = make_url(database_url)
    sync = _SYNC_DRIVERS.get(url.drivername)
    if sync is None:
        return database_url
    return url.set(drivername=sync).render_as_string(hide_password=False)


# -- the one enqueue path ----------------------------------------------------------------------

#: A statement to run, with the one row of parameters of an INSERT (None: none); it is sent
#: back the rows the statement returned.
_Step = tuple[Executable, dict[str, Any] | None]
_Steps = Generator[_Step, Sequence[Sequence[Any]], str]


def _enqueue_steps(batch: dict[str, Any], row: dict[str, Any], dialect: str) -> _Steps:
    """Insert the job's batch and ``row`` unless they exist; then the existing job's id, if the
    request is the same. ON CONFLICT DO NOTHING instead of catching an IntegrityError: a failed
    INSERT would abort the caller's whole transaction on PostgreSQL."""
    yield insert_batch(dialect), batch
    inserted = yield insert_ignoring_duplicates(dialect), row
    if inserted:
        return str(inserted[0][0])
    t = ProvisioningJob
    key = row["idempotency_key"]
    found = yield select(t.id, t.fingerprint).where(col(t.idempotency_key) == key), None
    if not found:  # deleted between the INSERT and this read: as good as a conflict
        raise IdempotencyConflictError(key, "?")
    found_id, found_fingerprint = found[0]
    check_same_request(key, row["fingerprint"], found_id, found_fingerprint)
    return str(found_id)


_Run = Callable[[Executable, dict[str, Any] | None], Sequence[Sequence[Any]]]


def _drive(steps: Callable[[str], _Steps], dialect: str, run: _Run) -> str:
    gen = steps(dialect)
    try:
        step = next(gen)
        while True:
            try:
                rows = run(*step)
            except Exception as exc:
                _raise_stale_snapshot(dialect, exc)
                raise
            step = gen.send(rows)
    except StopIteration as done:
        result: str = done.value
        return result


async def _adrive(
    steps: Callable[[str], _Steps],
    dialect: str,
    run: Callable[[Executable, dict[str, Any] | None], Awaitable[Sequence[Sequence[Any]]]],
) -> str:
    gen = steps(dialect)
    try:
        step = next(gen)
        while True:
            try:
                rows = await run(*step)
            except Exception as exc:
                _raise_stale_snapshot(dialect, exc)
                raise
            step = gen.send(rows)
    except StopIteration as done:
        result: str = done.value
        return result


def _raise_stale_snapshot(dialect: str, exc: Exception) -> None:
    """SQLite's "database is locked" on enqueue's write, as the error that explains it."""
    if dialect == "sqlite" and "database is locked" in str(getattr(exc, "orig", None) or exc):
        raise StaleSnapshotError(
            "SQLite could not write the job in this transaction: it read the database "
            "before enqueue and another writer has committed since (a read lock cannot "
            "be upgraded; busy_timeout does not help), or another writer held the lock "
            "longer than busy_timeout. Roll back and retry the transaction, calling "
            "enqueue before any read or beginning it with BEGIN IMMEDIATE."
        ) from exc


def _sa_rows(
    tx: Session | Connection, stmt: Executable, row: dict[str, Any] | None
) -> Sequence[Sequence[Any]]:
    result = tx.execute(stmt, [row]) if row is not None else tx.execute(stmt)
    return list(result.all())
