"""The Python API for web apps: enqueue inside your own transaction, read a job's status.

    provisioner = Provisioner(store)
    with Session(engine) as session:            # your SQLAlchemy / SQLModel session
        session.add(account)
        job_id = provisioner.enqueue(session, {"id": "signup-42", "domain": "shop.example.com"})
        session.commit()                        # the job exists iff this commits
    provisioner.status(job_id)                  # the same dict as ``provision status --json``

The job row is written in the caller's transaction: it is the outbox. Once the transaction
commits, the workers' scheduler sees the row and dispatches it as the quota allows (an
interactive job within a fraction of a second); a rollback discards it. Nothing is published
from this process, so there is no window between commit and publish in which a crash could lose
or duplicate anything.

SQLite only: a transaction that has READ before ``enqueue`` holds a read snapshot, and if another
writer committed since, SQLite cannot upgrade it to a write lock (``busy_timeout`` does not help:
waiting cannot make the snapshot current). ``enqueue`` then raises StaleSnapshotError at once.
Call ``enqueue`` before any read in the transaction, or begin the transaction with
``BEGIN IMMEDIATE``; either way roll back and retry the whole transaction on the error.
PostgreSQL has no such restriction.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlmodel import col, select

from producers import views
from producers.events import Event, parse_event
from worker.errors import InvalidRequestError
from worker.models import JobRequest, Priority, ProvisioningJob, utcnow
from worker.quota.report import Reporter
from worker.settings import Settings
from worker.store import JobStore, check_same_request, insert_ignoring_duplicates, job_values

log = logging.getLogger(__name__)


class StaleSnapshotError(RuntimeError):
    """SQLite refused ``enqueue``'s write in a transaction that had read before it."""


class Provisioner:
    """Enqueue and look up provisioning jobs on the status table ``store`` uses.

    ``accounts`` are the account names events may use (None: any); ``reporter`` gives batches
    their expected completion. ``Provisioner.from_settings()`` builds all three from the same
    settings as the ``provision`` command.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        accounts: Collection[str] | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.reporter = reporter

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Provisioner:
        """From ``PROVISIONER_*`` settings (the environment by default): the status database
        (which must be at this version's schema: ``provision db upgrade``) and the accounts."""
        from worker.runtime import make_accounts, make_reporter, make_store

        settings = settings or Settings()
        store = make_store(settings)
        return cls(
            store,
            accounts=make_accounts(settings).names,
            reporter=make_reporter(settings, store),
        )

    def enqueue(
        self,
        session: Session,
        item: Mapping[str, Any] | Event | JobRequest,
        *,
        key: str | None = None,
        batch_id: str | None = None,
        priority: Priority = Priority.interactive,
    ) -> str:
        """Write the job in ``session``'s transaction and return its id.

        ``item`` is a signup event (validated here; InvalidRequestError names the bad field), a
        parsed Event, or a JobRequest. The same key with the same request returns the existing
        job's id; with a different request, IdempotencyConflictError. ``priority`` is the class
        of an event that names none. Flushes the session. On SQLite, raises StaleSnapshotError if
        the transaction read before this call and another writer has committed since (see the
        module docstring).
        """
        parsed = self._as_event(item, key)
        row = job_values(
            parsed.request,
            key=parsed.key,
            batch_id=batch_id,
            now=utcnow(),
            priority=parsed.priority or priority,
        )
        # ON CONFLICT DO NOTHING instead of catching IntegrityError: a failed INSERT would abort
        # the caller's whole transaction on PostgreSQL.
        dialect = session.get_bind().dialect.name
        stmt = insert_ignoring_duplicates(dialect)
        try:
            inserted = session.execute(stmt, [row]).all()
        except OperationalError as exc:
            if dialect == "sqlite" and "database is locked" in str(exc.orig):
                raise StaleSnapshotError(
                    "SQLite could not write the job in this transaction: it read the database "
                    "before enqueue and another writer has committed since (a read lock cannot "
                    "be upgraded; busy_timeout does not help), or another writer held the lock "
                    "longer than busy_timeout. Roll back and retry the transaction, calling "
                    "enqueue before any read or beginning it with BEGIN IMMEDIATE."
                ) from exc
            raise
        if inserted:
            return str(inserted[0][0])
        t = ProvisioningJob
        found_id, found_fingerprint = session.execute(
            select(t.id, t.fingerprint).where(col(t.idempotency_key) == row["idempotency_key"])
        ).one()
        check_same_request(row["idempotency_key"], row["fingerprint"], found_id, found_fingerprint)
        return str(found_id)

    def status(self, ref: str) -> dict[str, Any] | None:
        """A job by id or idempotency key, as ``views.job_view``; None if there is none."""
        job = self.store.find(ref)
        return views.job_view(job) if job is not None else None

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """A batch as ``provision status --json BATCH`` shows it, with ``expected_completion``;
        None if no job has this batch id."""
        summary = self.store.batch_summary(batch_id)
        if summary.total == 0:
            return None
        eta = self.reporter.batch_eta(batch_id) if self.reporter is not None else None
        return views.batch_view(summary, eta)

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
