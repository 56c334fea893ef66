"""Recovery: the sweeper hands back to the scheduler what nobody is doing: jobs whose backoff is
over, jobs of a dead worker, and dispatched jobs whose broker message was lost."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, update
from sqlmodel import Session, col, select

from worker.dispatch import MessageClass
from worker.jobs.db import table_of
from worker.jobs.models import ProvisioningJob, WebhookDelivery
from worker.jobs.states import FINAL_STATUSES, DeliveryStatus, JobStatus, Priority
from worker.jobs.table import Table
from worker.times import as_utc

#: Re-publishing waits double with each message sent, up to this many times the base wait.
MAX_REDISPATCH_DOUBLINGS = 6


#: A dispatched job and when its message was sent.
Sent = tuple[str, datetime | None]


def redispatch_due(now: datetime, base_seconds: float) -> Any:
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


def class_of(priority: Priority | str, ran: bool) -> MessageClass:
    """The class of a dispatched job's message: (bulk, ran before), from its row's priority and
    whether it has a ``started_at``."""
    return (priority == Priority.bulk, ran)


def dispatch_stamps(now: datetime, job_ids: Iterable[str]) -> dict[str, datetime]:
    """A ``dispatched_at`` for each job, a microsecond apart in the order they are published:
    the order of the messages in each lane of the broker, which the sweeper reads back."""
    return {job_id: now + timedelta(microseconds=i) for i, job_id in enumerate(job_ids)}


def of_class(kind: MessageClass) -> Any:
    """The jobs whose message is of class ``kind``: (bulk, ran before), as the scheduler
    published it (``Dispatching.admit``)."""
    bulk, ran = kind
    t = ProvisioningJob
    started = col(t.started_at)
    return and_(
        col(t.priority) == (Priority.bulk if bulk else Priority.interactive),
        started.is_not(None) if ran else started.is_(None),
    )


class Recovery(Table):
    """What the sweeper and the lease keeper may do: hand jobs back to the scheduler."""

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

    def next_due(self) -> datetime | None:
        """When the first waiting job's backoff ends (one step down an index), if any waits."""
        t = ProvisioningJob
        with Session(self.engine) as session:
            due = session.execute(
                select(func.min(t.next_attempt_at)).where(col(t.status) == JobStatus.waiting)
            ).scalar()
        return as_utc(due)

    def running_owned(self, prefix: str) -> list[tuple[str, str, str]]:
        """(id, lease token, owner) of the running jobs whose owner starts with ``prefix``."""
        t = table_of(ProvisioningJob)
        with self.engine.connect() as connection:  # Core: every worker runs it every second
            rows = connection.execute(
                select(t.c.id, t.c.lease_token, t.c.lease_owner).where(
                    t.c.status == JobStatus.running.value, t.c.lease_owner.startswith(prefix)
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

    def take_for_redispatch(
        self,
        *,
        redispatch_after: float,
        missing: Mapping[frozenset[MessageClass], int],
        confirm: Callable[[list[Sent]], Collection[Sent]] = (lambda found: found),
    ) -> dict[MessageClass, list[str]]:
        """Take the dispatched jobs whose message is lost, to publish again. In each FIFO lane
        of the broker (``missing`` maps the classes of the messages a lane holds to how many it
        lacks), as many of its jobs as it lacks messages for: those that have waited longest
        without a worker claiming them (a lane hands out its oldest first), and of those the
        ones whose message is due to be sent again, if ``confirm`` agrees (given them, it
        returns those to take). Their message was lost: the broker was flushed or restarted,
        or the worker that took it died. Each is taken by exactly one sweeper, to be published
        again with the permits it holds, into the lane of its class (the key it is returned
        under). The wait before re-publishing doubles with each message sent, up to 64 times
        ``redispatch_after``."""
        now = self.clock()
        t = ProvisioningJob
        candidates: list[Any] = []
        with Session(self.engine) as session:
            for kinds, limit in missing.items():
                if limit <= 0:
                    continue
                oldest = (
                    select(t.id)
                    .where(col(t.status) == JobStatus.queued, col(t.dispatched_at).is_not(None))
                    .where(or_(*(of_class(kind) for kind in kinds)))
                    .order_by(col(t.dispatched_at), col(t.id))
                    .limit(limit)
                )
                candidates += session.execute(
                    select(t.id, t.dispatched_at, t.priority, t.started_at)
                    .where(col(t.id).in_(oldest.scalar_subquery()))
                    .where(redispatch_due(now, redispatch_after))
                    .order_by(col(t.dispatched_at), col(t.id))
                ).all()
        found = [(str(job_id), as_utc(at)) for job_id, at, _, _ in candidates]
        confirmed = confirm(found)
        candidates = [row for row, key in zip(candidates, found, strict=True) if key in confirmed]
        taken: dict[MessageClass, list[str]] = {}
        if not candidates:
            return taken
        # Published again in this order: stamped so, as the scheduler stamps its dispatches.
        stamps = dispatch_stamps(now, (row[0] for row in candidates))
        # Reads and writes in separate transactions: SQLite cannot upgrade a stale read lock.
        with Session(self.engine) as session:
            for job_id, dispatched_at, priority, started in candidates:
                result = session.execute(
                    update(t)
                    .where(col(t.id) == job_id, col(t.status) == JobStatus.queued)
                    .where(col(t.dispatched_at) == dispatched_at)
                    .values(dispatched_at=stamps[job_id], dispatch_count=t.dispatch_count + 1)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    taken.setdefault(class_of(priority, started is not None), []).append(job_id)
            session.commit()
        return taken

    def prune_finished(self, *, before: datetime, limit: int = 2000) -> int:
        """Delete up to ``limit`` jobs that finished before ``before``, with their webhooks,
        oldest first; returns how many. A job whose webhook is still to be delivered stays until
        it is. Their batches keep their counts (the database never counts deletions) and the
        inventory keeps what they made."""
        t, w = ProvisioningJob, WebhookDelivery
        old = (col(t.status).in_(FINAL_STATUSES), col(t.finished_at) < before)
        undelivered = (
            select(w.job_id)
            .where(col(w.job_id) == t.id, col(w.status) == DeliveryStatus.pending)
            .exists()
        )
        with Session(self.engine) as session:
            ids = list(
                session.execute(
                    select(t.id).where(*old, ~undelivered).order_by(col(t.finished_at)).limit(limit)
                ).scalars()
            )
        if not ids:
            return 0
        # Read, then write in another transaction (SQLite cannot upgrade a stale read lock); the
        # conditions are checked again, so a job retried meanwhile stays.
        with Session(self.engine) as session:
            deleted = list(
                session.execute(
                    delete(t).where(col(t.id).in_(ids), *old, ~undelivered).returning(col(t.id))
                ).scalars()
            )
            if deleted:
                session.execute(delete(w).where(col(w.job_id).in_(deleted)))
            session.commit()
        return len(deleted)
