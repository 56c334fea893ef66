"""Counts of the work ahead and behind, read from ``job_counts`` (kept by the database in the
transaction of every change to a job), so no reader counts the backlog: the quota report, a
batch's summary and expected completion, the scheduler's choice of batches.

A counted state is a job's status with ``queued`` split in two: ``ready`` (waiting for the
scheduler) and ``dispatched`` (handed to the broker, not started).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from worker.jobs.filters import JobFilter
from worker.jobs.models import JobCount, ProvisioningJob
from worker.jobs.states import UNFINISHED, JobStatus, Operation, Priority
from worker.jobs.table import UNSET, Table, Unset

READY = "ready"
DISPATCHED = "dispatched"
#: The counted states of a job that is not done yet.
OPEN_STATES = (READY, DISPATCHED, JobStatus.waiting.value, JobStatus.running.value)


def status_of(state: str) -> JobStatus:
    """The job status a counted state belongs to."""
    return JobStatus.queued if state in (READY, DISPATCHED) else JobStatus(state)


def summed(
    engine: Engine, *where: ColumnElement[bool], by: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """``by``'s values with the sum of jobs and of calls over the counts ``where`` matches."""
    c = JobCount
    query = sa.select(*by, func.sum(c.jobs), func.sum(c.calls)).where(*where)
    if by:
        query = query.group_by(*by)
    with Session(engine) as session:
        return [tuple(row) for row in session.execute(query).all()]


def _within(accounts: Sequence[str] | None) -> list[ColumnElement[bool]]:
    return [] if accounts is None else [col(JobCount.account).in_(list(accounts))]


class Counts(Table):
    """What the quota report, batch summaries and pauses may read: how much work there is, and
    whose."""

    def waiting_by_priority(self, accounts: Sequence[str]) -> dict[str, int]:
        """How many queued jobs of ``accounts`` wait for the scheduler, by class."""
        c = JobCount
        counts = {priority.value: 0 for priority in Priority}
        where = (col(c.state) == READY, col(c.account).in_(list(accounts)), col(c.jobs) > 0)
        for priority, jobs, _ in summed(self.engine, *where, by=[col(c.priority)]):
            counts[str(priority)] = int(jobs or 0)
        return counts

    def open_work(
        self,
        accounts: Sequence[str],
        priority: Priority | None = None,
        batch_id: str | Unset = UNSET,
    ) -> tuple[int, int]:
        """How many jobs (of ``priority``, of ``batch_id``) are not done yet, and the calls they
        still need."""
        c = JobCount
        where: list[ColumnElement[bool]] = [
            col(c.state).in_(OPEN_STATES),
            col(c.account).in_(list(accounts)),
            col(c.jobs) > 0,
        ]
        if priority is not None:
            where.append(col(c.priority) == priority.value)
        if not isinstance(batch_id, Unset):
            where.append(col(c.batch_id) == batch_id)
        [(jobs, calls)] = summed(self.engine, *where)
        return int(jobs or 0), int(calls or 0)

    def open_calls_by_batch(self, accounts: Sequence[str], priority: Priority) -> dict[str, int]:
        """The calls the unfinished jobs of each batch (of ``accounts``, in class ``priority``)
        still need, for the batches that have any."""
        c = JobCount
        where = (
            col(c.state).in_(OPEN_STATES),
            col(c.priority) == priority.value,
            col(c.account).in_(list(accounts)),
            col(c.jobs) > 0,
        )
        rows = summed(self.engine, *where, by=[col(c.batch_id)])
        return {str(batch): int(calls or 0) for batch, jobs, calls in rows if jobs}

    def batch_accounts(self, batch_id: str) -> list[str]:
        """The accounts the batch's jobs run under."""
        c = JobCount
        with Session(self.engine) as session:
            return list(
                session.execute(
                    select(c.account).where(col(c.batch_id) == batch_id).distinct()
                ).scalars()
            )

    def batch_counts(
        self, batch_ids: Sequence[str], within: Sequence[str] | None = None
    ) -> dict[str, dict[str, int]]:
        """Per batch: how many of its jobs (of the accounts ``within``, if given) are in each
        status (every status present)."""
        c = JobCount
        out = {batch: {status.value: 0 for status in JobStatus} for batch in batch_ids}
        rows = summed(
            self.engine,
            col(c.batch_id).in_(list(batch_ids)),
            *_within(within),
            by=[col(c.batch_id), col(c.state)],
        )
        for batch, state, jobs, _ in rows:
            out[str(batch)][status_of(str(state)).value] += int(jobs or 0)
        return out

    def batch_errors(
        self, batch_id: str, within: Sequence[str] | None = None
    ) -> dict[tuple[str, str], int]:
        """How many of the batch's jobs (of the accounts ``within``, if given) are in each
        status with each last error code (jobs without an error left out)."""
        c = JobCount
        where = (col(c.batch_id) == batch_id, col(c.code) != "", *_within(within))
        out: dict[tuple[str, str], int] = {}
        for state, code, jobs, _ in summed(self.engine, *where, by=[col(c.state), col(c.code)]):
            if jobs:
                key = (status_of(str(state)).value, str(code))
                out[key] = out.get(key, 0) + int(jobs)
        return out

    def unfinished_by_account(
        self, where: JobFilter, ids: Sequence[str] | None = None
    ) -> list[tuple[str, Operation, int]]:
        """How many jobs ``where`` matches (and of ``ids``, if given) are not done yet, by
        account and operation (an operator's question, on the jobs themselves)."""
        t = ProvisioningJob
        query = select(t.account, t.operation, func.count()).where(
            col(t.status).in_(UNFINISHED), *where.conditions()
        )
        if ids is not None:
            query = query.where(col(t.id).in_(list(ids)))
        with Session(self.engine) as session:
            rows = session.execute(query.group_by(col(t.account), col(t.operation))).all()
        return [(str(account), Operation(operation), int(n)) for account, operation, n in rows]
