"""Intake: producers write queued jobs, one INSERT for many, with one rule for a key that already
has a job (the same request is a duplicate; a different one is a conflict)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlmodel import Session, col, select

from worker.errors import IdempotencyConflictError
from worker.jobs.db import insert_ignoring, table_of
from worker.jobs.models import Batch, ProvisioningJob
from worker.jobs.specs import JobRequest, Progress, calls_needed
from worker.jobs.states import DEFAULT_ACCOUNT, JobStatus, Priority
from worker.jobs.table import Table


def _canonical(request: JobRequest) -> tuple[dict[str, Any], str]:
    """The request as stored, and the sha256 of its canonical JSON (its fingerprint).

    The default account is left out, so requests stored before accounts existed keep their
    fingerprints (and derived keys): re-importing an old file still finds its duplicates. So is
    a field added since (``callback_url``, ``managed_set``, ``custom_props``...) left at its
    default, for the same reason.
    """
    exclude = {"account"} if request.account == DEFAULT_ACCOUNT else set()
    exclude |= {
        name
        for name in (
            "callback_url",
            "managed_set",
            "custom_props",
            "guests",
            "custom_prop",
            "email",
            "tracker_script_configuration",
        )
        if getattr(request, name) in (None, ())
    }
    data = request.model_dump(mode="json", exclude=exclude or None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return data, hashlib.sha256(canonical.encode()).hexdigest()


def fingerprint(request: JobRequest) -> str:
    return _canonical(request)[1]


def derive_key(request: JobRequest) -> str:
    """The idempotency key of a request that came without one: stable across runs and hosts."""
    return _key_from_fingerprint(fingerprint(request))


def _key_from_fingerprint(digest: str) -> str:
    return f"req-{digest[:40]}"


class NewJob(NamedTuple):
    """A job to enqueue: its idempotency key (None: derived from the request), the request, and
    its priority class. ``progress``: steps known done before it starts (a plan's site that the
    inventory holds already, so its job makes no create call)."""

    key: str | None
    request: JobRequest
    priority: Priority = Priority.interactive
    progress: Progress | None = None


@dataclass(frozen=True)
class Enqueued:
    job: ProvisioningJob
    created: bool


@dataclass(frozen=True)
class BulkResult:
    """What ``enqueue_many`` did with each row, by position in its input."""

    created: dict[int, str]  #: input index -> new job id
    duplicate: dict[int, str]  #: input index -> the existing job id (same key, same request)
    conflict: dict[int, IdempotencyConflictError]  #: same key, different request


def check_same_request(
    key: str, new_fingerprint: str, existing_id: str, existing_fingerprint: str
) -> None:
    """The one rule for a key that already has a job (every enqueue path applies it): the same
    request is a duplicate (return quietly); a different one raises IdempotencyConflictError."""
    if existing_fingerprint != new_fingerprint:
        raise IdempotencyConflictError(key, existing_id)


@dataclass(frozen=True)
class BatchOf:
    """The batch new jobs join: its id, a name for people and where its jobs came from."""

    id: str
    name: str
    source: str

    @classmethod
    def of_day(cls, source: str, now: datetime) -> BatchOf:
        """The batch of the jobs that come one at a time from ``source``: one a day (UTC)."""
        day = now.astimezone(UTC)
        return cls(f"{source}-{day:%Y%m%d}", f"{source} {day:%Y-%m-%d}", source)

    def row(self, now: datetime) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "source": self.source, "created_at": now}


def insert_batch(dialect: str) -> Any:
    """INSERT a ``batches`` row unless it exists (``BatchOf.row``), RETURNING its id if new (so
    every driver's cursor has rows to fetch)."""
    table = table_of(Batch)
    return insert_ignoring(table, dialect, ["id"]).returning(table.c.id)


def job_values(
    request: JobRequest,
    *,
    key: str | None,
    batch_id: str,
    now: datetime,
    priority: Priority = Priority.interactive,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """A new queued job's column values, for a bulk INSERT: built without constructing a model
    object per row (which dominates the cost of a large import)."""
    data, digest = _canonical(request)
    return {
        "id": uuid.uuid4().hex,
        "idempotency_key": key or _key_from_fingerprint(digest),
        "operation": request.operation,
        "domain": request.domain,
        "account": request.account,
        "priority": priority,
        "batch_id": batch_id,
        "request": data,
        "fingerprint": digest,
        "status": JobStatus.queued,
        "progress": {}
        if progress is None
        else progress.model_dump(mode="json", exclude_defaults=True),
        "attempts": 0,
        "dispatch_count": 0,
        "calls_left": calls_needed(request, progress or Progress()),
        "created_at": now,
        "updated_at": now,
    }


def insert_ignoring_duplicates(dialect: str) -> Any:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key; run it
    with a list of rows (executemany: compiled once, sent in multi-row chunks)."""
    table = table_of(ProvisioningJob)
    return insert_ignoring(table, dialect, ["idempotency_key"]).returning(
        table.c.id, table.c.idempotency_key
    )


class Intake(Table):
    """What producers may do: enqueue."""

    def enqueue(
        self,
        request: JobRequest,
        *,
        key: str | None = None,
        batch: BatchOf | str | None = None,
        source: str = "api",
        priority: Priority = Priority.interactive,
    ) -> Enqueued:
        """Write a queued job, or return the job that already has this key.

        Raises IdempotencyConflictError when the key belongs to a different request. A one-row
        ``enqueue_many``: one insert-or-detect-duplicate path for every producer.
        """
        result = self.enqueue_many([NewJob(key, request, priority)], batch=batch, source=source)
        if 0 in result.conflict:
            raise result.conflict[0]
        created = 0 in result.created
        job = self.get(result.created[0] if created else result.duplicate[0])
        if job is None:  # deleted between the INSERT and this read: as good as a conflict
            raise IdempotencyConflictError(key or derive_key(request), "?")
        return Enqueued(job, created=created)

    def enqueue_many(
        self,
        items: Sequence[NewJob],
        *,
        batch: BatchOf | str | None = None,
        source: str = "api",
    ) -> BulkResult:
        """Write many queued jobs in one transaction; rows whose key exists are left alone.

        They join ``batch`` (a batch id names a batch after itself), or, by default, the batch of
        the day of their ``source`` (``http``, ``api``, ``stream``...).

        Keys repeated within ``items`` count once (the first wins). Returns which rows were created,
        which were duplicates of an existing job with the same request, and which reused a key for
        a different request. New rows have ``dispatched_at`` NULL: the scheduler dispatches them.
        """
        now = self.clock()
        if isinstance(batch, str):
            batch = BatchOf(batch, batch, source)
        batch = batch or BatchOf.of_day(source, now)
        jobs = [
            job_values(
                item.request,
                key=item.key,
                batch_id=batch.id,
                now=now,
                priority=item.priority,
                progress=item.progress,
            )
            for item in items
        ]
        first: dict[str, int] = {}
        for index, job in enumerate(jobs):
            first.setdefault(job["idempotency_key"], index)
        # Inserted in key order, whatever the input order: two transactions inserting
        # overlapping keys then lock them in the same order and cannot deadlock (PostgreSQL).
        unique = [jobs[first[key]] for key in sorted(first)]
        inserted: dict[str, str] = {}
        if unique:
            with Session(self.engine) as session:
                dialect = self.engine.dialect.name
                session.execute(insert_batch(dialect), batch.row(now))
                rows = session.execute(insert_ignoring_duplicates(dialect), unique)
                inserted = {key: job_id for job_id, key in rows.all()}
                session.commit()
            if inserted:
                self.announce()
        missing = [
            job["idempotency_key"] for job in unique if job["idempotency_key"] not in inserted
        ]
        existing: dict[str, tuple[str, str]] = {}
        if missing:  # a separate, read-only transaction after the write
            t = ProvisioningJob
            with Session(self.engine) as session:
                for job_id, key, fp in session.execute(
                    select(t.id, t.idempotency_key, t.fingerprint).where(
                        col(t.idempotency_key).in_(missing)
                    )
                ).all():
                    existing[key] = (job_id, fp)
        created: dict[int, str] = {}
        duplicate: dict[int, str] = {}
        conflict: dict[int, IdempotencyConflictError] = {}
        for index, job in enumerate(jobs):
            key = job["idempotency_key"]
            if key in inserted:
                if first[key] == index:
                    created[index] = inserted[key]
                    continue
                job_id, fp = inserted[key], jobs[first[key]]["fingerprint"]
            elif key in existing:
                job_id, fp = existing[key]
            else:  # deleted between the insert and the read: rare; report it as a conflict
                conflict[index] = IdempotencyConflictError(key, "?")
                continue
            try:
                check_same_request(key, job["fingerprint"], job_id, fp)
            except IdempotencyConflictError as exc:
                conflict[index] = exc
            else:
                duplicate[index] = job_id
        return BulkResult(created, duplicate, conflict)
