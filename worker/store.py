"""State transitions of the status table.

Every transition is one conditional UPDATE, so it is atomic on SQLite and PostgreSQL alike and
safe with any number of workers and sweepers on any number of hosts:

- ``claim`` turns a queued, due or abandoned job into a running one under a fresh lease token;
  a duplicate or redelivered message for a job someone else holds finds nothing to claim;
- ``checkpoint``, ``succeed``, ``fail`` and ``park`` only apply while the caller still holds
  that token (fencing), so a worker whose lease was taken over can never overwrite newer state;
- the sweeper's ``requeue_due`` and ``take_for_dispatch`` decide which jobs need a message.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from worker.errors import IdempotencyConflictError
from worker.models import JobRequest, JobStatus, Operation, Progress, ProvisioningJob, utcnow

Clock = Callable[[], datetime]


class LeaseLostError(Exception):
    """The job's lease was taken over (it expired); the holder must stop touching the job."""


def _canonical(request: JobRequest) -> tuple[dict[str, Any], str]:
    """The request as stored, and the sha256 of its canonical JSON (its fingerprint)."""
    data = request.model_dump(mode="json")
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return data, hashlib.sha256(canonical.encode()).hexdigest()


def fingerprint(request: JobRequest) -> str:
    return _canonical(request)[1]


def derive_key(request: JobRequest) -> str:
    """The idempotency key of a request that came without one: stable across runs and hosts."""
    return _key_from_fingerprint(fingerprint(request))


def _key_from_fingerprint(digest: str) -> str:
    return f"req-{digest[:40]}"


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every datetime we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a running job."""

    job_id: str
    token: str
    attempts: int
    request: JobRequest
    progress: Progress


@dataclass(frozen=True)
class Enqueued:
    job: ProvisioningJob
    created: bool


class JobStore:
    def __init__(self, engine: Engine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    # -- producers ---------------------------------------------------------------------------

    def enqueue(
        self, request: JobRequest, *, key: str | None = None, batch_id: str | None = None
    ) -> Enqueued:
        """Write a queued job, or return the job that already has this key.

        Raises IdempotencyConflictError when the key belongs to a different request. A one-row
        ``enqueue_many``: one insert-or-detect-duplicate path for every producer.
        """
        result = self.enqueue_many([(key, request)], batch_id=batch_id)
        if 0 in result.conflict:
            raise result.conflict[0]
        created = 0 in result.created
        job = self.get(result.created[0] if created else result.duplicate[0])
        if job is None:  # deleted between the INSERT and this read: as good as a conflict
            raise IdempotencyConflictError(key or derive_key(request), "?")
        return Enqueued(job, created=created)

    def get(self, job_id: str) -> ProvisioningJob | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(ProvisioningJob, job_id)

    def get_by_key(self, key: str) -> ProvisioningJob | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.exec(
                select(ProvisioningJob).where(ProvisioningJob.idempotency_key == key)
            ).first()

    def find(self, ref: str) -> ProvisioningJob | None:
        """A job by its id or its idempotency key (the id wins if both match), in one query."""
        t = ProvisioningJob
        with Session(self.engine, expire_on_commit=False) as session:
            jobs = session.exec(
                select(t).where(or_(col(t.id) == ref, col(t.idempotency_key) == ref))
            ).all()
        return next((job for job in jobs if job.id == ref), jobs[0] if jobs else None)

    def batch(self, batch_id: str) -> list[ProvisioningJob]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.exec(
                    select(ProvisioningJob)
                    .where(ProvisioningJob.batch_id == batch_id)
                    .order_by(col(ProvisioningJob.created_at))
                ).all()
            )

    def mark_dispatched(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        if ids:
            t = ProvisioningJob
            self._update(
                col(t.id).in_(ids),
                col(t.dispatched_at).is_(None),
                dispatched_at=self.clock(),
                dispatch_count=t.dispatch_count + 1,
            )

    # -- workers -----------------------------------------------------------------------------

    def claim(self, job_id: str, *, lease_seconds: float) -> Claim | None:
        """Take the job if it is queued, due, or abandoned by an expired lease; else None."""
        now = self.clock()
        token = uuid.uuid4().hex
        t = ProvisioningJob
        claimable = or_(
            col(t.status) == JobStatus.queued,
            and_(col(t.status) == JobStatus.waiting, col(t.next_attempt_at) <= now),
            and_(col(t.status) == JobStatus.running, col(t.lease_expires_at) < now),
        )
        changed = self._update(
            col(t.id) == job_id,
            claimable,
            status=JobStatus.running,
            lease_token=token,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=t.attempts + 1,
            next_attempt_at=None,
            started_at=func.coalesce(t.started_at, now),
            updated_at=now,
        )
        job = self.get(job_id) if changed == 1 else None
        if job is None:
            return None
        return Claim(job.id, token, job.attempts, job.spec, job.progress)

    def checkpoint(self, claim: Claim, progress: Progress, *, lease_seconds: float) -> None:
        """Record finished steps, so a later attempt resumes after them; renews the lease."""
        self._apply(claim, progress=progress, lease_expires_at=self._lease_end(lease_seconds))

    def renew(self, claim: Claim, *, lease_seconds: float) -> None:
        """Extend a live claim; raises LeaseLostError if it was already taken over."""
        self._apply(claim, lease_expires_at=self._lease_end(lease_seconds))

    def _lease_end(self, lease_seconds: float) -> datetime:
        return self.clock() + timedelta(seconds=lease_seconds)

    def succeed(self, claim: Claim, progress: Progress) -> None:
        self._release(claim, JobStatus.succeeded, progress, finished_at=self.clock())

    def fail(
        self,
        claim: Claim,
        *,
        code: str,
        message: str,
        http_status: int | None,
        progress: Progress,
    ) -> None:
        self._release(
            claim,
            JobStatus.failed,
            progress,
            (code, message, http_status),
            finished_at=self.clock(),
        )

    def park(
        self,
        claim: Claim,
        *,
        until: datetime,
        code: str,
        message: str,
        http_status: int | None,
        progress: Progress,
        refund_attempt: bool = False,
    ) -> None:
        """Release the job until ``until``; the sweeper re-drives it then.

        ``refund_attempt`` keeps a wait for quota from counting towards the attempt limit.
        """
        extra: dict[str, Any] = {"attempts": ProvisioningJob.attempts - 1} if refund_attempt else {}
        self._release(
            claim,
            JobStatus.waiting,
            progress,
            (code, message, http_status),
            next_attempt_at=until,
            dispatched_at=None,
            **extra,
        )

    def _release(
        self,
        claim: Claim,
        status: JobStatus,
        progress: Progress,
        error: tuple[str, str, int | None] | None = None,
        **values: Any,
    ) -> None:
        """End the claim: the job's new status, its progress and last error, lease cleared."""
        code, message, http_status = error or (None, None, None)
        self._apply(
            claim,
            status=status,
            progress=progress,
            error_code=code,
            error_message=message,
            error_status=http_status,
            lease_token=None,
            lease_expires_at=None,
            **values,
        )

    def _apply(self, claim: Claim, **values: Any) -> None:
        t = ProvisioningJob
        fenced = (col(t.id) == claim.job_id, col(t.lease_token) == claim.token)
        if self._update(*fenced, updated_at=self.clock(), **values) != 1:
            raise LeaseLostError(claim.job_id)

    def _update(self, *conditions: Any, **values: Any) -> int:
        """One conditional UPDATE in its own transaction; returns how many rows it changed."""
        with Session(self.engine) as session:
            result = session.execute(update(ProvisioningJob).where(*conditions).values(**values))
            session.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]

    def goal_id_from_history(self, domain: str, natural_key: str) -> int | None:
        """The id our newest succeeded provisioning of ``domain`` recorded for a goal, if any."""
        t = ProvisioningJob
        with Session(self.engine) as session:
            progresses: Iterable[Progress] = session.execute(
                select(col(t.progress))
                .where(col(t.domain) == domain, col(t.operation) == Operation.provision_site)
                .where(col(t.status) == JobStatus.succeeded)
                .order_by(col(t.finished_at).desc())
            ).scalars()
            for progress in progresses:
                goal = progress.goals.get(natural_key)
                if goal is not None:
                    return goal.id
        return None

    # -- sweeper -----------------------------------------------------------------------------

    def requeue_due(self) -> list[str]:
        """Queue again the waiting jobs whose time has come and the running jobs whose lease
        ended; returns their ids, already marked as dispatched, for the caller to publish."""
        now = self.clock()
        t = ProvisioningJob
        with Session(self.engine) as session:
            ids = (
                session.execute(
                    update(t)
                    .where(
                        or_(
                            and_(col(t.status) == JobStatus.waiting, col(t.next_attempt_at) <= now),
                            and_(col(t.status) == JobStatus.running, col(t.lease_expires_at) < now),
                        )
                    )
                    .values(
                        status=JobStatus.queued,
                        lease_token=None,
                        lease_expires_at=None,
                        dispatched_at=now,
                        dispatch_count=t.dispatch_count + 1,
                        updated_at=now,
                    )
                    .returning(col(t.id))
                )
                .scalars()
                .all()
            )
            session.commit()
        return list(ids)

    def take_for_dispatch(
        self, *, undispatched_grace: float, redispatch_after: float, limit: int = 500
    ) -> list[str]:
        """Queued jobs that need a (new) message, each taken by exactly one sweeper.

        A job never published gets its message after a short grace (its producer died between
        commit and publish); these come first, so a backlog can never starve them. A job
        published long ago that never started lost its message (the broker was flushed or
        restarted); the wait before re-publishing doubles with each message, up to 64 times
        ``redispatch_after``, so a long but healthy backlog is not flooded with duplicates.
        """
        now = self.clock()
        t = ProvisioningJob
        never_sent = and_(
            col(t.dispatched_at).is_(None),
            col(t.updated_at) <= now - timedelta(seconds=undispatched_grace),
        )
        candidates: list[tuple[str, datetime | None]] = []
        with Session(self.engine) as session:
            for due, order in (
                (never_sent, col(t.created_at)),
                (_redispatch_due(now, redispatch_after), col(t.dispatched_at)),
            ):
                rows = session.execute(
                    select(t.id, t.dispatched_at)
                    .where(col(t.status) == JobStatus.queued, due)
                    .order_by(order)
                    .limit(limit - len(candidates))
                ).all()
                candidates += [(job_id, sent) for job_id, sent in rows]
                if len(candidates) >= limit:
                    break
        taken: list[str] = []
        # Reads and writes in separate transactions: SQLite cannot upgrade a stale read lock.
        with Session(self.engine) as session:
            for job_id, dispatched_at in candidates:
                result = session.execute(
                    update(t)
                    .where(col(t.id) == job_id, col(t.status) == JobStatus.queued)
                    .where(
                        col(t.dispatched_at).is_(None)
                        if dispatched_at is None
                        else col(t.dispatched_at) == dispatched_at
                    )
                    .values(dispatched_at=now, dispatch_count=t.dispatch_count + 1)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    taken.append(job_id)
            session.commit()
        return taken

    def release_dispatch(self, job_ids: Iterable[str]) -> None:
        """Publishing failed: let the next sweep try again at once."""
        ids = list(job_ids)
        if ids:
            self._update(col(ProvisioningJob.id).in_(ids), dispatched_at=None)

    # -- producers: queries and operator actions ----------------------------------------------

    def enqueue_many(
        self,
        items: Sequence[tuple[str | None, JobRequest]],
        *,
        batch_id: str | None = None,
    ) -> BulkResult:
        """Write many queued jobs in one transaction; rows whose key exists are left alone.

        Keys repeated within ``items`` count once (the first wins). Returns which rows were created,
        which were duplicates of an existing job with the same request, and which reused a key for
        a different request. New rows have ``dispatched_at`` NULL: the caller publishes them, or the
        sweeper does after the grace period.
        """
        now = self.clock()
        jobs = [job_values(request, key=key, batch_id=batch_id, now=now) for key, request in items]
        first: dict[str, int] = {}
        for index, job in enumerate(jobs):
            first.setdefault(job["idempotency_key"], index)
        # Inserted in key order, whatever the input order: two transactions inserting
        # overlapping keys then lock them in the same order and cannot deadlock (PostgreSQL).
        unique = [jobs[first[key]] for key in sorted(first)]
        inserted: dict[str, str] = {}
        if unique:
            with Session(self.engine) as session:
                rows = session.execute(insert_ignoring_duplicates(self.engine.dialect.name), unique)
                inserted = {key: job_id for job_id, key in rows.all()}
                session.commit()
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

    def find_by_domain(self, domain: str, *, limit: int = 100) -> list[ProvisioningJob]:
        """Jobs for ``domain`` (as normalised when enqueued), newest first."""
        t = ProvisioningJob
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.exec(
                    select(t)
                    .where(t.domain == domain)
                    .order_by(col(t.created_at).desc(), col(t.id))
                    .limit(limit)
                ).all()
            )

    def batch_summary(self, batch_id: str, *, max_failures: int = 100) -> BatchSummary:
        """How many jobs of the batch are in each status, and the failed ones (up to a limit)."""
        t = ProvisioningJob
        with Session(self.engine, expire_on_commit=False) as session:
            counts = {status.value: 0 for status in JobStatus}
            for status, n in session.execute(
                select(t.status, func.count()).where(t.batch_id == batch_id).group_by(t.status)
            ).all():
                counts[JobStatus(status).value] = int(n)
            failures = list(
                session.exec(
                    select(t)
                    .where(t.batch_id == batch_id, col(t.status) == JobStatus.failed)
                    .order_by(col(t.created_at), col(t.id))
                    .limit(max_failures)
                ).all()
            )
        return BatchSummary(batch_id, sum(counts.values()), counts, failures)

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        domain: str | None = None,
        batch_id: str | None = None,
        limit: int = 50,
        after: tuple[datetime, str] | None = None,
    ) -> list[ProvisioningJob]:
        """Jobs matching every given filter, oldest first, ``limit`` at a time.

        Keyset pagination: pass the (created_at, id) of the last job of a page as ``after``.
        """
        t = ProvisioningJob
        query = select(t)
        if status is not None:
            query = query.where(col(t.status) == status)
        if domain is not None:
            query = query.where(t.domain == domain)
        if batch_id is not None:
            query = query.where(t.batch_id == batch_id)
        if after is not None:
            created, last_id = after
            query = query.where(
                or_(
                    col(t.created_at) > created,
                    and_(col(t.created_at) == created, col(t.id) > last_id),
                )
            )
        query = query.order_by(col(t.created_at), col(t.id)).limit(limit)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(query).all())

    def cancel(self, job_id: str) -> bool:
        """Withdraw a queued or waiting job; False if it is in any other status (or unknown)."""
        now = self.clock()
        t = ProvisioningJob
        changed = self._update(
            col(t.id) == job_id,
            col(t.status).in_(CANCELLABLE),
            status=JobStatus.cancelled,
            next_attempt_at=None,
            lease_token=None,
            lease_expires_at=None,
            finished_at=now,
            updated_at=now,
        )
        return changed == 1

    def retry(self, job_id: str) -> bool:
        """Queue a failed job again from its last checkpoint, with a fresh attempt budget and no
        message yet (the caller publishes it; else the sweeper does). False unless it was failed."""
        t = ProvisioningJob
        changed = self._update(
            col(t.id) == job_id,
            col(t.status) == JobStatus.failed,
            status=JobStatus.queued,
            attempts=0,
            error_code=None,
            error_message=None,
            error_status=None,
            next_attempt_at=None,
            finished_at=None,
            dispatched_at=None,
            updated_at=self.clock(),
        )
        return changed == 1


#: Re-publishing waits double with each message sent, up to this many times the base wait.
MAX_REDISPATCH_DOUBLINGS = 6


def _redispatch_due(now: datetime, base_seconds: float) -> Any:
    """Published at least ``base * 2**(messages - 1)`` seconds ago (capped), as one portable SQL
    condition: one clause per doubling, since SQLite and PostgreSQL spell powers differently."""
    t = ProvisioningJob
    count, sent = col(t.dispatch_count), col(t.dispatched_at)

    def sent_before(doublings: int) -> Any:
        return sent <= now - timedelta(seconds=base_seconds * 2**doublings)

    top = MAX_REDISPATCH_DOUBLINGS
    return or_(
        and_(count <= 1, sent_before(0)),
        *(and_(count == n + 1, sent_before(n)) for n in range(1, top)),
        and_(count >= top + 1, sent_before(top)),
    )


def check_same_request(
    key: str, new_fingerprint: str, existing_id: str, existing_fingerprint: str
) -> None:
    """The one rule for a key that already has a job (every enqueue path applies it): the same
    request is a duplicate (return quietly); a different one raises IdempotencyConflictError."""
    if existing_fingerprint != new_fingerprint:
        raise IdempotencyConflictError(key, existing_id)


# Producer-side helpers, used by the JobStore methods in the section of the same name.
# Appended for the producers (bulk import, status lookups, the HTTP service and the stream
# consumer). Same rules as above: each transition is one conditional UPDATE, and no transaction
# reads then writes (SQLite cannot upgrade a stale read lock).

#: Statuses a job can be cancelled from: it has not started (or is parked between attempts).
CANCELLABLE = (JobStatus.queued, JobStatus.waiting)


@dataclass(frozen=True)
class BulkResult:
    """What ``enqueue_many`` did with each row, by position in its input."""

    created: dict[int, str]  #: input index -> new job id
    duplicate: dict[int, str]  #: input index -> the existing job id (same key, same request)
    conflict: dict[int, IdempotencyConflictError]  #: same key, different request


@dataclass(frozen=True)
class BatchSummary:
    batch_id: str
    total: int
    counts: dict[str, int]
    failures: list[ProvisioningJob]

    @property
    def done(self) -> bool:
        return self.total > 0 and all(
            JobStatus(status).done for status, n in self.counts.items() if n
        )


def job_values(
    request: JobRequest, *, key: str | None, batch_id: str | None, now: datetime
) -> dict[str, Any]:
    """A new queued job's column values, for a bulk INSERT: built without constructing a model object per row (which dominates the cost of a large import)."""
    data, digest = _canonical(request)
    return {
        "id": uuid.uuid4().hex,
        "idempotency_key": key or _key_from_fingerprint(digest),
        "operation": request.operation,
        "domain": request.domain,
        "batch_id": batch_id,
        "request": data,
        "fingerprint": digest,
        "status": JobStatus.queued,
        "progress": {},
        "attempts": 0,
        "dispatch_count": 0,
        "created_at": now,
        "updated_at": now,
    }


def insert_ignoring_duplicates(dialect: str) -> Any:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key; run it
    with a list of rows (executemany: compiled once, sent in multi-row chunks)."""
    from sqlalchemy.dialects import postgresql, sqlite

    table = ProvisioningJob.__table__  # type: ignore[attr-defined]
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(dialect)
    return stmt.on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(
        table.c.id, table.c.idempotency_key
    )
