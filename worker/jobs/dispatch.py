"""Dispatch: the scheduler admits queued jobs as the quota allows and hands them to the broker."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import or_, update
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from worker.jobs.counts import DISPATCHED, READY, Counts, summed
from worker.jobs.models import Batch, JobCount, ProvisioningJob
from worker.jobs.states import JobStatus, Operation, Priority
from worker.times import as_utc


def _not_provisioning(accounts: Sequence[str]) -> list[ColumnElement[bool]]:
    """No provision_site job of ``accounts`` (their new sites are paused)."""
    t = ProvisioningJob
    if not accounts:
        return []
    return [
        or_(col(t.account).not_in(list(accounts)), col(t.operation) != Operation.provision_site)
    ]


class Ready(NamedTuple):
    """A job the scheduler may admit: what it needs to decide."""

    id: str
    batch_id: str | None
    #: The calls the job still needs (``calls_needed``, kept with its checkpoints).
    calls: int
    created_at: datetime


class Dispatching(Counts):
    """What the scheduler may do: pick jobs that fit the quota, mark them dispatched."""

    def ready_jobs(
        self,
        accounts: Sequence[str],
        priority: Priority,
        *,
        limit: int,
        batch_ids: Sequence[str] | None = None,
        no_provision: Sequence[str] = (),
    ) -> list[Ready]:
        """Queued jobs of ``accounts`` in class ``priority`` that no scheduler has dispatched,
        but for the provision_site jobs of the accounts ``no_provision`` names: the oldest
        ``limit``, or, given ``batch_ids``, the oldest ``limit`` of each of those batches (one
        query: a UNION ALL of index range scans), in arrival order."""
        t = ProvisioningJob
        where = (
            col(t.status) == JobStatus.queued,
            col(t.priority) == priority,
            col(t.dispatched_at).is_(None),
            col(t.account).in_(list(accounts)),
            *_not_provisioning(no_provision),
        )
        columns = (col(t.id), col(t.batch_id), col(t.calls_left), col(t.created_at))
        oldest = (col(t.created_at), col(t.id))
        if batch_ids is None:
            query: Any = sa.select(*columns).where(*where).order_by(*oldest).limit(limit)
        elif not batch_ids:
            return []
        else:
            parts = [
                sa.select(*columns)
                .where(*where, col(t.batch_id) == batch_id)
                .order_by(*oldest)
                .limit(limit)
                .subquery()
                .select()
                for batch_id in batch_ids
            ]
            query = sa.union_all(*parts) if len(parts) > 1 else parts[0]
        with Session(self.engine) as session:
            rows = session.execute(query).all()
        return sorted(
            (Ready(job_id, batch, int(calls), at) for job_id, batch, calls, at in rows),
            key=lambda ready: (ready.created_at, ready.id),
        )

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
                col(c.jobs) > 0,
            )
            .group_by(col(c.batch_id), col(b.created_at))
            .order_by(col(b.created_at), col(c.batch_id))
        )
        with Session(self.engine) as session:
            return list(session.execute(query).scalars())

    def admit(self, permits: Mapping[str, dict[str, int]]) -> set[str]:
        """Mark queued, undispatched jobs as dispatched with the permits reserved for each (job
        id -> window key -> permits); returns those marked (another scheduler may have taken a
        job first, or it was cancelled). One UPDATE per distinct reservation."""
        t = ProvisioningJob
        now = self.clock()
        alike: dict[tuple[tuple[str, int], ...], list[str]] = {}
        for job_id, reserved in permits.items():
            alike.setdefault(tuple(sorted(reserved.items())), []).append(job_id)
        admitted: set[str] = set()
        with Session(self.engine) as session:
            for held, ids in alike.items():
                admitted.update(
                    session.execute(
                        update(t)
                        .where(
                            col(t.id).in_(sorted(ids)),
                            col(t.status) == JobStatus.queued,
                            col(t.dispatched_at).is_(None),
                        )
                        .values(
                            dispatched_at=now,
                            dispatch_count=t.dispatch_count + 1,
                            permits=dict(held),
                        )
                        .returning(col(t.id))
                    ).scalars()
                )
            session.commit()
        return admitted

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
        [(jobs, _)] = summed(self.engine, col(JobCount.state) == DISPATCHED, col(JobCount.jobs) > 0)
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
