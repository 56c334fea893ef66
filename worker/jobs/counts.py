"""Counts of the work ahead, for the quota report, the expected completion and account pauses."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from worker.jobs.filters import JobFilter
from worker.jobs.models import ProvisioningJob
from worker.jobs.specs import JobRequest, Progress
from worker.jobs.states import UNFINISHED, JobStatus, Operation, Priority
from worker.jobs.table import UNSET, Table, Unset


class Counts(Table):
    """What the quota report and the pauses may read: how much work waits, and whose."""

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
