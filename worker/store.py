"""State transitions of the status table.

Every transition is one conditional UPDATE, so it is atomic on SQLite and PostgreSQL alike and
safe with any number of workers and sweepers on any number of hosts:

- ``claim`` turns a queued, due or abandoned job into a running one under a fresh lease token;
  a duplicate or redelivered message for a job someone else holds finds nothing to claim;
- ``checkpoint``, ``succeed``, ``fail`` and ``park`` only apply while the caller still holds
  that token (fencing), so a worker whose lease was taken over can never overwrite newer state;
- the scheduler's ``admission_candidates`` and ``admit`` dispatch queued jobs as the quota
  allows; the sweeper's ``requeue_due`` hands due and abandoned jobs back to it, and
  ``take_for_redispatch`` finds dispatched jobs whose message was lost.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, func, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from worker.db import insert_ignoring
from worker.errors import IdempotencyConflictError
from worker.models import (
    DEFAULT_ACCOUNT,
    DeliveryStatus,
    JobRequest,
    JobStatus,
    Operation,
    Priority,
    Progress,
    ProvisioningJob,
    WebhookDelivery,
    utcnow,
)
from worker.webhooks import new_delivery

Clock = Callable[[], datetime]


class Unset:
    """The type of ``UNSET``: an argument not given, where None is a meaningful value."""


UNSET = Unset()


class LeaseLostError(Exception):
    """The job's lease was taken over (it expired); the holder must stop touching the job."""


def _canonical(request: JobRequest) -> tuple[dict[str, Any], str]:
    """The request as stored, and the sha256 of its canonical JSON (its fingerprint).

    The default account is left out, so requests stored before accounts existed keep their
    fingerprints (and derived keys): re-importing an old file still finds its duplicates. So is
    a ``callback_url`` of None, for the same reason.
    """
    exclude = {"account"} if request.account == DEFAULT_ACCOUNT else set()
    if request.callback_url is None:
        exclude.add("callback_url")
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
    priority: Priority = Priority.interactive
    #: Quota permits reserved for the job when it was dispatched (window key -> permits).
    permits: dict[str, int] = field(default_factory=dict)
    idempotency_key: str | None = None


class NewJob(NamedTuple):
    """A job to enqueue: its idempotency key (None: derived from the request), the request, and
    its priority class."""

    key: str | None
    request: JobRequest
    priority: Priority = Priority.interactive


@dataclass(frozen=True)
class Enqueued:
    job: ProvisioningJob
    created: bool


@dataclass(frozen=True)
class DeliveryClaim:
    """A worker's hold on a webhook delivery it is sending (``worker.webhooks``)."""

    event_id: str
    job_id: str
    token: str
    url: str
    body: str
    #: This attempt's number (1 for the first).
    attempts: int


class JobStore:
    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = utcnow,
        webhook_urls: Mapping[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        #: Account name -> its ``webhook_url``: where a job of the account that names no
        #: ``callback_url`` is POSTed once done (``worker.runtime.make_store`` fills it in).
        self.webhook_urls: Mapping[str, str] = dict(webhook_urls or {})

    # -- producers ---------------------------------------------------------------------------

    def enqueue(
        self,
        request: JobRequest,
        *,
        key: str | None = None,
        batch_id: str | None = None,
        priority: Priority = Priority.interactive,
    ) -> Enqueued:
        """Write a queued job, or return the job that already has this key.

        Raises IdempotencyConflictError when the key belongs to a different request. A one-row
        ``enqueue_many``: one insert-or-detect-duplicate path for every producer.
        """
        result = self.enqueue_many([NewJob(key, request, priority)], batch_id=batch_id)
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

    # -- workers -----------------------------------------------------------------------------

    def claim(self, job_id: str, *, lease_seconds: float, owner: str | None = None) -> Claim | None:
        """Take the job if it is queued, due, or abandoned by an expired lease; else None.
        ``owner`` names the claiming process (``worker.leases.this_process``)."""
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
            lease_owner=owner,
            attempts=t.attempts + 1,
            next_attempt_at=None,
            started_at=func.coalesce(t.started_at, now),
            updated_at=now,
        )
        job = self.get(job_id) if changed == 1 else None
        if job is None:
            return None
        return Claim(
            job.id,
            token,
            job.attempts,
            job.spec,
            job.progress,
            Priority(job.priority),
            dict(job.permits or {}),
            job.idempotency_key,
        )

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
    ) -> None:
        """Release the job until ``until`` (a transient failure); the sweeper re-drives it then."""
        self._release(
            claim,
            JobStatus.waiting,
            progress,
            (code, message, http_status),
            next_attempt_at=until,
            dispatched_at=None,
        )

    def requeue(
        self, claim: Claim, *, code: str, message: str, http_status: int | None, progress: Progress
    ) -> None:
        """Hand the job back to the scheduler at its checkpoint: the quota has no room for its
        next call. Waiting for quota does not count as an attempt."""
        self._release(
            claim,
            JobStatus.queued,
            progress,
            (code, message, http_status),
            attempts=ProvisioningJob.attempts - 1,
            next_attempt_at=None,
            dispatched_at=None,
        )

    def _release(
        self,
        claim: Claim,
        status: JobStatus,
        progress: Progress,
        error: tuple[str, str, int | None] | None = None,
        **values: Any,
    ) -> None:
        """End the claim: the job's new status, its progress and last error, lease cleared. A
        final status with a webhook URL writes its outbox row in the same transaction."""
        code, message, http_status = error or (None, None, None)
        url = self.webhook_url(claim.request.callback_url, claim.request.account)
        apply = self._apply_notifying if status.done and url else self._apply
        apply(
            claim,
            status=status,
            progress=progress,
            error_code=code,
            error_message=message,
            error_status=http_status,
            lease_token=None,
            lease_expires_at=None,
            permits=None,
            **values,
        )

    def _apply(self, claim: Claim, **values: Any) -> None:
        t = ProvisioningJob
        fenced = (col(t.id) == claim.job_id, col(t.lease_token) == claim.token)
        if self._update(*fenced, updated_at=self.clock(), **values) != 1:
            raise LeaseLostError(claim.job_id)

    def _apply_notifying(self, claim: Claim, **values: Any) -> None:
        """``_apply`` of a final status, and the job's webhook in the outbox: one transaction."""
        self._finish(col(ProvisioningJob.id) == claim.job_id, fence=claim, **values)

    def webhook_url(self, callback_url: str | None, account: str) -> str | None:
        """Where a job's webhook goes: its own ``callback_url``, else its account's, if any."""
        return callback_url or self.webhook_urls.get(account)

    def _finish(self, *conditions: Any, fence: Claim | None = None, **values: Any) -> list[str]:
        """Give the jobs ``conditions`` match a final status (``values``) and put a webhook
        for each that has a URL in the outbox, in one transaction; returns their ids. With
        ``fence``, only while that claim holds the job (else LeaseLostError, nothing written).

        The UPDATE comes first, so on SQLite the transaction holds the write lock before it
        reads the rows back for the bodies."""
        t = ProvisioningJob
        # The event's ``created`` is the job's ``finished_at`` (and ``updated_at``).
        now = values.setdefault("updated_at", values.get("finished_at") or self.clock())
        if fence is not None:
            conditions = (*conditions, col(t.lease_token) == fence.token)
        with Session(self.engine) as session:
            rows = session.execute(
                update(t)
                .where(*conditions)
                .values(**values)
                .returning(col(t.id), col(t.request), col(t.account))
            ).all()
            if fence is not None and len(rows) != 1:
                session.rollback()
                raise LeaseLostError(fence.job_id)
            urls: dict[str, str] = {}
            for job_id, request, account in rows:
                url = self.webhook_url((request or {}).get("callback_url"), account)
                if url:
                    urls[job_id] = url
            ids = list(urls)
            for start in range(0, len(ids), 500):
                for job in session.exec(select(t).where(col(t.id).in_(ids[start : start + 500]))):
                    session.add(new_delivery(job, urls[job.id], now))
            session.commit()
        return [job_id for job_id, _, _ in rows]

    def _update(self, *conditions: Any, **values: Any) -> int:
        """One conditional UPDATE in its own transaction; returns how many rows it changed."""
        with Session(self.engine) as session:
            result = session.execute(update(ProvisioningJob).where(*conditions).values(**values))
            session.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]

    def _update_returning(self, *conditions: Any, **values: Any) -> list[str]:
        """``_update``, returning the ids of the rows it changed."""
        t = ProvisioningJob
        with Session(self.engine) as session:
            ids = (
                session.execute(update(t).where(*conditions).values(**values).returning(col(t.id)))
                .scalars()
                .all()
            )
            session.commit()
        return list(ids)

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

    def requeue_due(self) -> int:
        """Hand back to the scheduler the waiting jobs whose time has come and the running jobs
        whose lease ended (their worker died); returns how many."""
        now = self.clock()
        t = ProvisioningJob
        return self._update(
            or_(
                and_(col(t.status) == JobStatus.waiting, col(t.next_attempt_at) <= now),
                and_(col(t.status) == JobStatus.running, col(t.lease_expires_at) < now),
            ),
            status=JobStatus.queued,
            lease_token=None,
            lease_expires_at=None,
            next_attempt_at=None,
            dispatched_at=None,
            permits=None,
            updated_at=now,
        )

    def running_owned(self, prefix: str) -> list[tuple[str, str, str]]:
        """(id, lease token, owner) of the running jobs whose owner starts with ``prefix``."""
        t = ProvisioningJob
        with Session(self.engine) as session:
            rows = session.execute(
                select(t.id, t.lease_token, t.lease_owner).where(
                    col(t.status) == JobStatus.running, col(t.lease_owner).startswith(prefix)
                )
            ).all()
        return [(i, token, owner) for i, token, owner in rows if token and owner]

    def take_back(self, claims: Sequence[tuple[str, str]]) -> int:
        """Hand back to the scheduler the running jobs of these (id, lease token) claims, each
        only if that claim still holds it; returns how many."""
        t = ProvisioningJob
        now = self.clock()
        taken = 0
        for job_id, token in claims:
            taken += self._update(
                col(t.id) == job_id,
                col(t.status) == JobStatus.running,
                col(t.lease_token) == token,
                status=JobStatus.queued,
                lease_token=None,
                lease_expires_at=None,
                dispatched_at=None,
                permits=None,
                updated_at=now,
            )
        return taken

    def unstarted_dispatched(self, *, redispatch_after: float) -> int:
        """How many dispatched jobs have waited ``redispatch_after`` (doubling with each message
        sent) without a worker claiming them."""
        t = ProvisioningJob
        now = self.clock()
        with Session(self.engine) as session:
            return int(
                session.execute(
                    select(func.count()).where(
                        col(t.status) == JobStatus.queued, _redispatch_due(now, redispatch_after)
                    )
                ).scalar()
                or 0
            )

    def take_for_redispatch(self, *, redispatch_after: float, limit: int = 500) -> list[str]:
        """Of the ``limit`` dispatched jobs that have waited longest without a worker claiming
        them, those whose message is due to be sent again: their message is lost (the broker
        was flushed or restarted, or the worker that took it died). Each is taken by exactly
        one sweeper, to be published again with the permits it holds. The wait before
        re-publishing doubles with each message sent, up to 64 times ``redispatch_after``."""
        now = self.clock()
        t = ProvisioningJob
        if limit <= 0:
            return []
        oldest = (
            select(t.id)
            .where(col(t.status) == JobStatus.queued, col(t.dispatched_at).is_not(None))
            .order_by(col(t.dispatched_at))
            .limit(limit)
        )
        with Session(self.engine) as session:
            candidates = session.execute(
                select(t.id, t.dispatched_at)
                .where(col(t.id).in_(oldest.scalar_subquery()))
                .where(_redispatch_due(now, redispatch_after))
                .order_by(col(t.dispatched_at))
            ).all()
        taken: list[str] = []
        # Reads and writes in separate transactions: SQLite cannot upgrade a stale read lock.
        with Session(self.engine) as session:
            for job_id, dispatched_at in candidates:
                result = session.execute(
                    update(t)
                    .where(col(t.id) == job_id, col(t.status) == JobStatus.queued)
                    .where(col(t.dispatched_at) == dispatched_at)
                    .values(dispatched_at=now, dispatch_count=t.dispatch_count + 1)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    taken.append(job_id)
            session.commit()
        return taken

    # -- webhooks (worker.webhooks) ----------------------------------------------------------

    def claim_delivery(self, *, lease_seconds: float, max_attempts: int) -> DeliveryClaim | None:
        """Take the longest-due webhook that no live lease holds, for one attempt (counted now);
        None if there is none. A delivery whose worker died during its last allowed attempt is
        failed instead of sent again."""
        w = WebhookDelivery
        now = self.clock()
        due = (
            col(w.status) == DeliveryStatus.pending,
            col(w.next_attempt_at) <= now,
            or_(col(w.lease_expires_at).is_(None), col(w.lease_expires_at) < now),
        )
        with Session(self.engine) as session:  # read, then write in separate transactions
            candidates = session.execute(
                select(w.event_id, w.attempts)
                .where(*due)
                .order_by(col(w.next_attempt_at))
                .limit(10)
            ).all()
        for event_id, attempts in candidates:
            unchanged = (col(w.event_id) == event_id, col(w.attempts) == attempts, *due)
            if attempts >= max_attempts:
                self._update_delivery(
                    *unchanged,
                    status=DeliveryStatus.failed,
                    last_status=None,
                    last_error=f"attempt {attempts}: the sending worker stopped before an answer",
                    lease_token=None,
                    lease_expires_at=None,
                )
                continue
            token = uuid.uuid4().hex
            with Session(self.engine) as session:
                row = session.execute(
                    update(w)
                    .where(*unchanged)
                    .values(
                        lease_token=token,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                        attempts=w.attempts + 1,
                    )
                    .returning(col(w.job_id), col(w.url), col(w.body), col(w.attempts))
                ).first()
                session.commit()
            if row is not None:
                job_id, url, body, attempt = row
                return DeliveryClaim(event_id, job_id, token, url, body, attempt)
        return None

    def finish_delivery(
        self,
        claim: DeliveryClaim,
        *,
        status: DeliveryStatus,
        last_status: int | None,
        last_error: str | None,
        retry_in: float | None = None,
    ) -> bool:
        """Record an attempt's outcome and release the claim; ``retry_in`` seconds until the
        next attempt (pending). False if the lease was taken over meanwhile (nothing written)."""
        w = WebhookDelivery
        now = self.clock()
        values: dict[str, Any] = {
            "status": status,
            "last_status": last_status,
            "last_error": last_error,
            "lease_token": None,
            "lease_expires_at": None,
        }
        if status is DeliveryStatus.delivered:
            values["delivered_at"] = now
        if retry_in is not None:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in)
        fenced = (col(w.event_id) == claim.event_id, col(w.lease_token) == claim.token)
        return self._update_delivery(*fenced, **values) == 1

    def deliveries(self, job_id: str) -> list[WebhookDelivery]:
        """The job's webhooks, oldest first."""
        w = WebhookDelivery
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.exec(
                    select(w)
                    .where(col(w.job_id) == job_id)
                    .order_by(col(w.created_at), col(w.event_id))
                ).all()
            )

    def pending_deliveries(self) -> int:
        """How many webhooks wait to be sent."""
        w = WebhookDelivery
        with Session(self.engine) as session:
            return int(
                session.execute(
                    select(func.count()).where(col(w.status) == DeliveryStatus.pending)
                ).scalar()
                or 0
            )

    def _update_delivery(self, *conditions: Any, **values: Any) -> int:
        with Session(self.engine) as session:
            result = session.execute(update(WebhookDelivery).where(*conditions).values(**values))
            session.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]

    # -- scheduler ---------------------------------------------------------------------------

    def admission_candidates(
        self,
        accounts: Sequence[str],
        priority: Priority,
        *,
        limit: int,
        batch_id: str | Unset | None = UNSET,
        no_provision: Sequence[str] = (),
    ) -> list[ProvisioningJob]:
        """Queued jobs of ``accounts`` in class ``priority`` that no scheduler has dispatched,
        oldest first (optionally of one batch; None is the jobs without a batch), but for the
        provision_site jobs of the accounts ``no_provision`` names."""
        t = ProvisioningJob
        query = select(t).where(
            col(t.status) == JobStatus.queued,
            col(t.priority) == priority,
            col(t.dispatched_at).is_(None),
            col(t.account).in_(accounts),
            *_not_provisioning(no_provision),
        )
        if not isinstance(batch_id, Unset):
            query = query.where(
                col(t.batch_id).is_(None) if batch_id is None else col(t.batch_id) == batch_id
            )
        query = query.order_by(col(t.created_at), col(t.id)).limit(limit)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(query).all())

    def pending_batches(
        self, accounts: Sequence[str], priority: Priority, *, no_provision: Sequence[str] = ()
    ) -> list[str | None]:
        """The batches that have undispatched queued jobs in ``priority``, oldest first."""
        t = ProvisioningJob
        with Session(self.engine) as session:
            rows = session.execute(
                select(t.batch_id, func.min(t.created_at))
                .where(
                    col(t.status) == JobStatus.queued,
                    col(t.priority) == priority,
                    col(t.dispatched_at).is_(None),
                    col(t.account).in_(accounts),
                    *_not_provisioning(no_provision),
                )
                .group_by(col(t.batch_id))
                .order_by(func.min(t.created_at))
            ).all()
        return [batch_id for batch_id, _ in rows]

    def admit(self, job_id: str, permits: dict[str, int]) -> bool:
        """Mark a queued, undispatched job as dispatched with the permits reserved for it; False
        if another scheduler took it first (or it was cancelled)."""
        t = ProvisioningJob
        now = self.clock()
        changed = self._update(
            col(t.id) == job_id,
            col(t.status) == JobStatus.queued,
            col(t.dispatched_at).is_(None),
            dispatched_at=now,
            dispatch_count=t.dispatch_count + 1,
            permits=permits,
        )
        return changed == 1

    def waiting_by_priority(self, accounts: Sequence[str]) -> dict[str, int]:
        """How many queued jobs of ``accounts`` wait for the scheduler, by class."""
        t = ProvisioningJob
        counts = {priority.value: 0 for priority in Priority}
        with Session(self.engine) as session:
            for priority, n in session.execute(
                select(t.priority, func.count())
                .where(
                    col(t.status) == JobStatus.queued,
                    col(t.dispatched_at).is_(None),
                    col(t.account).in_(accounts),
                )
                .group_by(col(t.priority))
            ).all():
                counts[str(priority)] = int(n)
        return counts

    def unfinished(
        self,
        accounts: Sequence[str],
        priority: Priority | None,
        batch_id: str | Unset | None = UNSET,
        *,
        sample: int,
    ) -> tuple[int, list[tuple[JobRequest, Progress]]]:
        """How many jobs (of ``priority``, or any) are not done yet (queued, waiting or running),
        and the requests and progress of up to ``sample`` of them."""
        t = ProvisioningJob
        where: list[ColumnElement[bool]] = [
            col(t.status).in_(UNFINISHED),
            col(t.account).in_(accounts),
        ]
        if priority is not None:
            where.append(col(t.priority) == priority)
        if not isinstance(batch_id, Unset):
            where.append(
                col(t.batch_id).is_(None) if batch_id is None else col(t.batch_id) == batch_id
            )
        with Session(self.engine) as session:
            count = int(session.execute(select(func.count()).where(*where)).scalar() or 0)
            rows = session.execute(
                select(t.request, col(t.progress)).where(*where).limit(sample)
            ).all()
        return count, [(JobRequest.model_validate(request), progress) for request, progress in rows]

    def unfinished_batches(self, accounts: Sequence[str], priority: Priority) -> list[str | None]:
        t = ProvisioningJob
        with Session(self.engine) as session:
            return list(
                session.execute(
                    select(t.batch_id)
                    .where(
                        col(t.status).in_(UNFINISHED),
                        col(t.priority) == priority,
                        col(t.account).in_(accounts),
                    )
                    .distinct()
                ).scalars()
            )

    def unfinished_by_account(
        self, where: JobFilter, ids: Sequence[str] | None = None
    ) -> list[tuple[str, Operation, int]]:
        """How many jobs ``where`` matches (and of ``ids``, if given) are not done yet, by
        account and operation."""
        t = ProvisioningJob
        query = select(t.account, t.operation, func.count()).where(
            col(t.status).in_(UNFINISHED), *where.conditions()
        )
        if ids is not None:
            query = query.where(col(t.id).in_(list(ids)))
        with Session(self.engine) as session:
            rows = session.execute(query.group_by(col(t.account), col(t.operation))).all()
        return [(str(account), Operation(operation), int(n)) for account, operation, n in rows]

    def batch_accounts(self, batch_id: str) -> list[str]:
        """The accounts the batch's jobs run under."""
        t = ProvisioningJob
        with Session(self.engine) as session:
            return list(
                session.execute(
                    select(t.account).where(col(t.batch_id) == batch_id).distinct()
                ).scalars()
            )

    def recent_run_seconds(self, accounts: Sequence[str], *, limit: int = 20) -> list[float]:
        """How long the last jobs to succeed took from their dispatch to done, in seconds."""
        t = ProvisioningJob
        with Session(self.engine) as session:
            rows = session.execute(
                select(t.dispatched_at, t.finished_at)
                .where(
                    col(t.status) == JobStatus.succeeded,
                    col(t.account).in_(accounts),
                    col(t.finished_at) >= self.clock() - timedelta(minutes=10),
                )
                .order_by(col(t.finished_at).desc())
                .limit(limit)
            ).all()
        return [
            (finished - sent).total_seconds()
            for sent, finished in ((as_utc(a), as_utc(b)) for a, b in rows)
            if sent is not None and finished is not None and finished >= sent
        ]

    def release_dispatch(self, job_ids: Iterable[str]) -> None:
        """Publishing failed: the scheduler offers these jobs again at its next tick (their
        permits were given back)."""
        ids = list(job_ids)
        t = ProvisioningJob
        if ids:
            self._update(
                col(t.id).in_(ids),
                col(t.status) == JobStatus.queued,
                dispatched_at=None,
                permits=None,
            )

    # -- producers: queries and operator actions ----------------------------------------------

    def enqueue_many(
        self,
        items: Sequence[NewJob],
        *,
        batch_id: str | None = None,
    ) -> BulkResult:
        """Write many queued jobs in one transaction; rows whose key exists are left alone.

        Keys repeated within ``items`` count once (the first wins). Returns which rows were created,
        which were duplicates of an existing job with the same request, and which reused a key for
        a different request. New rows have ``dispatched_at`` NULL: the scheduler dispatches them.
        """
        now = self.clock()
        jobs = [
            job_values(
                item.request, key=item.key, batch_id=batch_id, now=now, priority=item.priority
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
        """How many jobs of the batch are in each status, its failures counted by error code,
        and the first failed jobs (up to ``max_failures``; page through the rest with
        ``list_jobs``)."""
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
        by_code = self.failures_by_code(batch_id) if failures else {}
        return BatchSummary(batch_id, sum(counts.values()), counts, failures, by_code)

    def list_jobs(
        self,
        where: JobFilter | None = None,
        *,
        limit: int = 50,
        after: tuple[datetime, str] | None = None,
    ) -> list[ProvisioningJob]:
        """Jobs matching ``where``, oldest first, ``limit`` at a time.

        Keyset pagination: pass the (created_at, id) of the last job of a page as ``after``.
        """
        t = ProvisioningJob
        query = select(t).where(*(where or JobFilter()).conditions())
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

    def failures_by_code(self, batch_id: str) -> dict[str, int]:
        """How many of the batch's jobs failed, by error code, most common first."""
        t = ProvisioningJob
        with Session(self.engine) as session:
            rows = session.execute(
                select(t.error_code, func.count())
                .where(col(t.batch_id) == batch_id, col(t.status) == JobStatus.failed)
                .group_by(col(t.error_code))
                .order_by(func.count().desc(), col(t.error_code))
            ).all()
        return {str(code): int(n) for code, n in rows}

    def cancel_matching(self, where: JobFilter) -> list[str]:
        """Withdraw every queued or waiting job ``where`` matches; returns their ids."""
        return self._cancel(*where.conditions())

    def retry_ids(self, job_ids: Sequence[str]) -> list[str]:
        """Queue again those of ``job_ids`` that failed; returns their ids."""
        return self._retry(col(ProvisioningJob.id).in_(list(job_ids))) if job_ids else []

    def retry_matching(self, where: JobFilter) -> list[str]:
        """Queue again every failed job ``where`` matches; returns their ids."""
        return self._retry(*where.conditions())

    def cancel(self, job_id: str) -> bool:
        """Withdraw a queued or waiting job; False if it is in any other status (or unknown)."""
        return len(self._cancel(col(ProvisioningJob.id) == job_id)) == 1

    def retry(self, job_id: str) -> bool:
        """Queue a failed job again from its last checkpoint, with a fresh attempt budget, for the
        scheduler to dispatch. False unless it was failed."""
        return len(self._retry(col(ProvisioningJob.id) == job_id)) == 1

    def _cancel(self, *conditions: ColumnElement[bool]) -> list[str]:
        now = self.clock()
        t = ProvisioningJob
        return self._finish(
            *conditions,
            col(t.status).in_(CANCELLABLE),
            status=JobStatus.cancelled,
            next_attempt_at=None,
            lease_token=None,
            lease_expires_at=None,
            # Permits reserved for it stay counted in their window (a few calls at most).
            permits=None,
            finished_at=now,
            updated_at=now,
        )

    def _retry(self, *conditions: ColumnElement[bool]) -> list[str]:
        t = ProvisioningJob
        return self._update_returning(
            *conditions,
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


@dataclass(frozen=True)
class JobFilter:
    """Which jobs an operator means: every given field must match (none given: every job)."""

    status: JobStatus | None = None
    batch_id: str | None = None
    domain: str | None = None
    account: str | None = None
    #: The last error's code, e.g. ``domain_taken``.
    error_code: str | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__dataclass_fields__)

    def conditions(self) -> list[ColumnElement[bool]]:
        t = ProvisioningJob
        columns = {
            "status": col(t.status),
            "batch_id": col(t.batch_id),
            "domain": col(t.domain),
            "account": col(t.account),
            "error_code": col(t.error_code),
        }
        return [
            column == getattr(self, name)
            for name, column in columns.items()
            if getattr(self, name) is not None
        ]


def _not_provisioning(accounts: Sequence[str]) -> list[ColumnElement[bool]]:
    """No provision_site job of ``accounts`` (their new sites are paused)."""
    t = ProvisioningJob
    if not accounts:
        return []
    return [
        or_(col(t.account).not_in(list(accounts)), col(t.operation) != Operation.provision_site)
    ]


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
#: Statuses of a job that is not done yet.
UNFINISHED = (JobStatus.queued, JobStatus.waiting, JobStatus.running)


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
    #: The first failed jobs; ``truncated`` when there are more.
    failures: list[ProvisioningJob]
    failures_by_code: dict[str, int] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return len(self.failures) < self.counts.get(JobStatus.failed.value, 0)

    @property
    def done(self) -> bool:
        return self.total > 0 and all(
            JobStatus(status).done for status, n in self.counts.items() if n
        )


def job_values(
    request: JobRequest,
    *,
    key: str | None,
    batch_id: str | None,
    now: datetime,
    priority: Priority = Priority.interactive,
) -> dict[str, Any]:
    """A new queued job's column values, for a bulk INSERT: built without constructing a model object per row (which dominates the cost of a large import)."""
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
        "progress": {},
        "attempts": 0,
        "dispatch_count": 0,
        "created_at": now,
        "updated_at": now,
    }


def insert_ignoring_duplicates(dialect: str) -> Any:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key; run it
    with a list of rows (executemany: compiled once, sent in multi-row chunks)."""
    table = ProvisioningJob.__table__  # type: ignore[attr-defined]
    return insert_ignoring(table, dialect, ["idempotency_key"]).returning(
        table.c.id, table.c.idempotency_key
    )
