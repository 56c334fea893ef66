"""Dispatch: the scheduler admits queued jobs as the quota allows and hands them to the broker."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlalchemy import func, or_
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from worker.jobs.counts import DISPATCHED, READY, summed
from worker.jobs.models import Batch, JobCount, ProvisioningJob
from worker.jobs.states import JobStatus, Operation, Priority
from worker.jobs.table import UNSET, Table, Unset
from worker.times import as_utc


def _not_provisioning(accounts: Sequence[str]) -> list[ColumnElement[bool]]:
    """No provision_site job of ``accounts`` (their new sites are paused)."""
    t = ProvisioningJob
    if not accounts:
        return []
    return [
        or_(col(t.account).not_in(list(accounts)), col(t.operation) != Operation.provision_site)
    ]


class Dispatching(Table):
    """What the scheduler may do: pick jobs that fit the quota, mark them dispatched."""

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
    ) -> list[str]:
        """The batches that have jobs of ``accounts`` in ``priority`` waiting for the scheduler,
        oldest first (from the counts: ``no_provision`` is applied when their jobs are fetched)."""
        c, b = JobCount, Batch
        query = (
            select(c.batch_id)
            .join(b, col(b.id) == col(c.batch_id))
            .where(
                col(c.state) == READY,
                col(c.priority) == priority.value,
                col(c.account).in_(list(accounts)),
            )
            .group_by(col(c.batch_id), col(b.created_at))
            .having(func.sum(c.jobs) > 0)
            .order_by(col(b.created_at), col(c.batch_id))
        )
        with Session(self.engine) as session:
            return list(session.execute(query).scalars())

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

    def unstarted_dispatched(self) -> int:
        """How many dispatched jobs no worker has started yet."""
        [(jobs, _)] = summed(self.engine, col(JobCount.state) == DISPATCHED)
        return int(jobs or 0)

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
