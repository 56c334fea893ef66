"""Dispatch: the scheduler admits queued jobs as the quota allows and hands them to the broker."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import and_, or_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Session, col, select

from worker.dispatch import MessageClass
from worker.jobs.counts import DISPATCHED, READY, Counts, summed
from worker.jobs.db import table_of
from worker.jobs.models import Batch, JobCount, ProvisioningJob
from worker.jobs.recovery import class_of, dispatch_stamps
from worker.jobs.states import JobStatus, Operation, Priority
from worker.times import as_utc


class Ready(NamedTuple):
    """A job the scheduler may admit: what it needs to decide."""

    id: str
    batch_id: str | None
    #: The calls the job still needs (``calls_needed``, kept with its checkpoints).
    calls: int
    created_at: datetime


class BatchPosition(NamedTuple):
    """Where a batch stands in the round-robin: its creation time and id."""

    created_at: datetime
    id: str


@functools.lru_cache(maxsize=256)
def _ready_statement(shape: str, no_provision: bool) -> Any:
    """The statement of ``ready_jobs``, built once per shape (``all``, ``lateral`` or
    ``union:N``), with every value a bound parameter: a tick builds no SQL expression."""
    t = table_of(ProvisioningJob)
    where = [
        t.c.status == JobStatus.queued.value,
        t.c.priority == sa.bindparam("priority"),
        t.c.dispatched_at.is_(None),
        t.c.account.in_(sa.bindparam("accounts", expanding=True)),
    ]
    if no_provision:
        where.append(
            or_(
                t.c.account.not_in(sa.bindparam("no_provision", expanding=True)),
                t.c.operation != Operation.provision_site.value,
            )
        )
    columns = (t.c.id, t.c.batch_id, t.c.calls_left, t.c.created_at)
    oldest = (t.c.created_at, t.c.id)
    limit = sa.bindparam("limit", type_=sa.Integer())
    if shape == "all":
        return sa.select(*columns).where(*where).order_by(*oldest).limit(limit)
    if shape == "lateral":
        # One statement whatever the number of batches: planned once, not once per batch.
        wanted = (
            sa.func.unnest(sa.bindparam("batch_ids", type_=ARRAY(sa.String())))
            .table_valued("id")
            .render_derived(name="wanted")
        )
        each = (
            sa.select(*columns)
            .where(*where, t.c.batch_id == wanted.c.id)
            .order_by(*oldest)
            .limit(limit)
            .lateral("oldest")
        )
        return sa.select(each).select_from(wanted).join(each, sa.true())
    parts = [
        sa.select(*columns)
        .where(*where, t.c.batch_id == sa.bindparam(f"batch_{n}"))
        .order_by(*oldest)
        .limit(limit)
        .subquery()
        .select()
        for n in range(int(shape.split(":")[1]))
    ]
    return sa.union_all(*parts) if len(parts) > 1 else parts[0]


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
        query of an index range scan per batch: a LATERAL join on PostgreSQL, a UNION ALL on
        SQLite), in arrival order."""
        if batch_ids is not None and not batch_ids:
            return []
        params: dict[str, Any] = {
            "accounts": list(accounts),
            "priority": priority.value,
            "limit": limit,
            "no_provision": list(no_provision),
        }
        if batch_ids is None:
            query = _ready_statement("all", bool(no_provision))
        elif self.engine.dialect.name == "postgresql":
            query = _ready_statement("lateral", bool(no_provision))
            params["batch_ids"] = list(batch_ids)
        else:
            query = _ready_statement(f"union:{len(batch_ids)}", bool(no_provision))
            params.update({f"batch_{n}": batch_id for n, batch_id in enumerate(batch_ids)})
        with self.engine.connect() as connection:
            rows = connection.execute(query, params).all()
        return sorted(
            (
                Ready(job_id, batch, int(calls), as_utc(at) or at)
                for job_id, batch, calls, at in rows
            ),
            key=lambda ready: (ready.created_at, ready.id),
        )

    def pending_batches(
        self,
        accounts: Sequence[str],
        priority: Priority,
        *,
        after: BatchPosition | None = None,
        limit: int | None = None,
    ) -> list[BatchPosition]:
        """The batches that have jobs of ``accounts`` in ``priority`` waiting for the scheduler,
        oldest first, from after ``after``: up to ``limit`` of them. Each is found on the
        counts' partial index, so the cost is the batches read, not the jobs they hold."""
        c, b = JobCount, Batch
        waiting = (
            select(c.batch_id)
            .where(
                col(c.batch_id) == col(b.id),
                col(c.state) == READY,
                col(c.priority) == priority.value,
                col(c.account).in_(list(accounts)),
                col(c.jobs) > 0,
            )
            .exists()
        )
        query = select(b.created_at, b.id).where(waiting)
        if after is not None:
            stamp, batch_id = after
            query = query.where(
                or_(
                    col(b.created_at) > stamp,
                    and_(col(b.created_at) == stamp, col(b.id) > batch_id),
                )
            )
        query = query.order_by(col(b.created_at), col(b.id)).limit(limit)
        with Session(self.engine) as session:
            return [
                BatchPosition(stamp, batch_id) for stamp, batch_id in session.execute(query).all()
            ]

    def admit(self, permits: Mapping[str, dict[str, int]]) -> dict[str, bool]:
        """Mark queued, undispatched jobs as dispatched with the permits reserved for each (job
        id -> window key -> permits); returns those marked (another scheduler may have taken a
        job first, or it was cancelled), each with whether it ran before: its message goes
        ahead of its class (``first``). Read in the UPDATE that dispatches it, and unchanged
        until a worker starts it, so the sweeper finds its message's lane from its row
        (``unstarted_dispatched_before``). One UPDATE per distinct reservation.

        Each is stamped a microsecond after the one before it in ``permits``' order, the order
        they are published in: in each lane of the broker, the sweeper then knows which
        messages went first, and so which a dead worker took (``take_for_redispatch``)."""
        t = ProvisioningJob
        stamps = dispatch_stamps(self.clock(), permits)
        alike: dict[tuple[tuple[str, int], ...], list[str]] = {}
        for job_id, reserved in permits.items():
            alike.setdefault(tuple(sorted(reserved.items())), []).append(job_id)
        admitted: dict[str, bool] = {}
        jobs = table_of(t)
        with self.engine.begin() as connection:
            for held, ids in alike.items():
                stamp = sa.case(
                    {
                        job_id: sa.literal(stamps[job_id], jobs.c.dispatched_at.type)
                        for job_id in ids
                    },
                    value=jobs.c.id,
                )
                rows = connection.execute(
                    update(jobs)
                    .where(
                        jobs.c.id.in_(sorted(ids)),
                        jobs.c.status == JobStatus.queued.value,
                        jobs.c.dispatched_at.is_(None),
                    )
                    .values(
                        dispatched_at=stamp,
                        dispatch_count=jobs.c.dispatch_count + 1,
                        permits=dict(held),
                    )
                    # The column, not ``started_at IS NOT NULL``: SQLite 3.40.1 returns that wrong.
                    .returning(jobs.c.id, jobs.c.started_at)
                ).all()
                admitted.update((job_id, started is not None) for job_id, started in rows)
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

    def ready_waiting(self) -> int:
        """How many queued jobs wait for the scheduler to admit them."""
        [(jobs, _)] = summed(self.engine, col(JobCount.state) == READY, col(JobCount.jobs) > 0)
        return int(jobs or 0)

    def unstarted_dispatched(self) -> int:
        """How many dispatched jobs no worker has started yet."""
        [(jobs, _)] = summed(self.engine, col(JobCount.state) == DISPATCHED, col(JobCount.jobs) > 0)
        return int(jobs or 0)

    def unstarted_dispatched_before(self, moment: datetime) -> dict[MessageClass, int]:
        """How many jobs dispatched at or before ``moment`` no worker has started yet, by the
        class of their message: (bulk, ran before). One read of the dispatched jobs on their
        index: as few as the broker holds."""
        t = ProvisioningJob
        started = col(t.started_at).is_not(None)
        with Session(self.engine) as session:
            rows = session.execute(
                select(col(t.priority), started, sa.func.count())
                .where(col(t.dispatched_at) <= moment, col(t.status) == JobStatus.queued)
                .group_by(col(t.priority), started)
            ).all()
        counts: dict[MessageClass, int] = {}
        for priority, ran, jobs in rows:
            kind = class_of(priority, bool(ran))
            counts[kind] = counts.get(kind, 0) + int(jobs)
        return counts

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
