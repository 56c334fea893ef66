"""The Python API for web apps: enqueue inside your own transaction, read a job's status.

    provisioner = Provisioner(store, dispatcher)
    with Session(engine) as session:            # your SQLAlchemy / SQLModel session
        session.add(account)
        job_id = provisioner.enqueue(session, {"id": "signup-42", "domain": "shop.example.com"})
        session.commit()                        # the job exists iff this commits
    provisioner.status(job_id)                  # the same dict as ``provision status --json``

The job row is written in the caller's transaction with ``dispatched_at`` NULL (an outbox). Its
id is published from an ``after_commit`` hook; if the process dies between the commit and the
publish, the sweeper publishes it after ``PROVISIONER_UNDISPATCHED_GRACE_SECONDS``. A rollback
discards the row and nothing is published: no job is lost and none is invented.

SQLite only: a transaction that has READ before ``enqueue`` holds a read snapshot, and if another
writer committed since, SQLite cannot upgrade it to a write lock (``busy_timeout`` does not help:
waiting cannot make the snapshot current). ``enqueue`` then raises StaleSnapshotError at once.
Call ``enqueue`` before any read in the transaction, or begin the transaction with
``BEGIN IMMEDIATE``; either way roll back and retry the whole transaction on the error.
PostgreSQL has no such restriction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel import col, select

from producers import views
from producers.events import Event, parse_event
from producers.submit import publish
from worker.models import JobRequest, ProvisioningJob, utcnow
from worker.store import JobStore, check_same_request, insert_ignoring_duplicates, job_values
from worker.sweeper import Dispatcher

log = logging.getLogger(__name__)


class StaleSnapshotError(RuntimeError):
    """SQLite refused ``enqueue``'s write in a transaction that had read before it."""


#: Key in ``Session.info`` holding the ids to publish when the session's transaction commits.
OUTBOX_KEY = "provisioner_outbox"


class Provisioner:
    """Enqueue and look up provisioning jobs on the status table ``store`` uses."""

    def __init__(self, store: JobStore, dispatcher: Dispatcher) -> None:
        self.store = store
        self.dispatcher = dispatcher

    def enqueue(
        self,
        session: Session,
        item: Mapping[str, Any] | Event | JobRequest,
        *,
        key: str | None = None,
        batch_id: str | None = None,
    ) -> str:
        """Write the job in ``session``'s transaction and return its id.

        ``item`` is a signup event (validated here; InvalidRequestError names the bad field), a
        parsed Event, or a JobRequest. The same key with the same request returns the existing
        job's id; with a different request, IdempotencyConflictError. Flushes the session. On
        SQLite, raises StaleSnapshotError if the transaction read before this call and another
        writer has committed since (see the module docstring).
        """
        parsed = _as_event(item, key)
        row = job_values(parsed.request, key=parsed.key, batch_id=batch_id, now=utcnow())
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
            job_id: str = inserted[0][0]
            _stage(session, self, job_id)
            return job_id
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


def _as_event(item: Mapping[str, Any] | Event | JobRequest, key: str | None) -> Event:
    if isinstance(item, JobRequest):
        return Event(key, item)
    if isinstance(item, Event):
        return Event(key or item.key, item.request)
    parsed = parse_event(dict(item))
    return Event(key or parsed.key, parsed.request)


def _stage(session: Session, provisioner: Provisioner, job_id: str) -> None:
    """Remember ``job_id`` for publication once the session's outermost transaction commits."""
    pending: list[tuple[Provisioner, str]] | None = session.info.get(OUTBOX_KEY)
    if pending is None:
        pending = session.info[OUTBOX_KEY] = []
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_soft_rollback", _after_rollback)
    pending.append((provisioner, job_id))


def _after_commit(session: Session) -> None:
    pending: list[tuple[Provisioner, str]] = session.info.get(OUTBOX_KEY) or []
    session.info[OUTBOX_KEY] = []
    by_target: dict[int, tuple[Provisioner, list[str]]] = {}
    for provisioner, job_id in pending:
        by_target.setdefault(id(provisioner), (provisioner, []))[1].append(job_id)
    for provisioner, ids in by_target.values():
        # Own connection: the caller's session cannot run SQL inside after_commit.
        publish(provisioner.store, provisioner.dispatcher, ids)


def _after_rollback(session: Session, previous: SessionTransaction) -> None:
    if previous.parent is None:  # the outermost transaction: its rows are gone
        session.info[OUTBOX_KEY] = []
