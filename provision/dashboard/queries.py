"""The dashboard's reads of the status database: each bounded by a page, on an index.

- Batches come from their own table, newest first, a page at a time (``ix_batches_created``).
- Counts per status of the batches on a page, and their errors, from ``job_counts`` (kept by the
  database with every change to a job): no job is counted here.
- A batch's rate: its jobs finished in the last minute (``ix_provisioning_jobs_batch_finished``).
- Lists of jobs, newest first, in keyset pages: by domain, batch, id or key on their indexes;
  otherwise one query per (status, priority) on ``ix_provisioning_jobs_admission`` (status,
  priority, created_at), which reads ``limit`` index entries each, merged here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from provision.actions import APPLIES_TO
from provision.cursors import Cursor
from worker.jobs.filters import JobFilter
from worker.jobs.models import Batch, JobCount, ProvisioningJob
from worker.jobs.queries import RATE_SECONDS, rate_label
from worker.jobs.states import FINAL_STATUSES, UNFINISHED, JobStatus, Priority
from worker.jobs.store import JobStore
from worker.times import as_utc

#: The order of the statuses in a progress bar: done first (in the enum's order), then work in
#: flight, the nearest to done first.
BAR_ORDER = (*(s for s in JobStatus if s in FINAL_STATUSES), *reversed(UNFINISHED))
#: Statuses a group of errors is shown for: those an action applies to (retry the failed,
#: cancel the queued or waiting, held by the error).
GROUPED = tuple(s for statuses in APPLIES_TO.values() for s in statuses)


@dataclass(frozen=True)
class BatchStats:
    batch_id: str
    submitted: datetime | None
    counts: dict[str, int]
    #: For people: the file's name, a label, or the source and day.
    name: str = ""
    source: str = ""
    finished: datetime | None = None
    #: Jobs of the batch finished in the last ``RATE_SECONDS``.
    recent: int = 0
    eta: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished_jobs(self) -> int:
        return sum(self.counts.get(s.value, 0) for s in FINAL_STATUSES)

    @property
    def done(self) -> bool:
        return self.total > 0 and self.finished_jobs == self.total

    @property
    def rate_per_minute(self) -> float:
        return self.recent * 60 / RATE_SECONDS

    @property
    def rate(self) -> str:
        return rate_label(self.recent)

    @property
    def percent(self) -> int:
        return int(100 * self.finished_jobs / self.total) if self.total else 0

    def segments(self) -> list[tuple[str, int, float, float]]:
        """(status, count, start, width) of the progress bar, in per mille of its length."""
        out, start = [], 0.0
        for status in BAR_ORDER:
            n = self.counts.get(status.value, 0)
            if n and self.total:
                width = 1000 * n / self.total
                out.append((status.value, n, round(start, 2), round(width, 2)))
                start += width
        return out


@dataclass(frozen=True)
class Group:
    """Jobs of a batch in one status with one error code."""

    status: str
    code: str
    count: int
    message: str | None
    examples: list[ProvisioningJob] = field(default_factory=list)

    @property
    def action(self) -> str:
        return next(a for a, statuses in APPLIES_TO.items() if self.status in statuses)


class Queries:
    def __init__(self, store: JobStore) -> None:
        self.store = store

    # -- batches -------------------------------------------------------------------------------

    def batch_page(
        self, *, limit: int, after: Cursor | None = None, within: Sequence[str] | None = None
    ) -> tuple[list[str], Cursor | None]:
        """A page of batch ids, newest first (those holding jobs of the accounts ``within``, if
        given), and the cursor of the next page (None: last)."""
        b, c = Batch, JobCount
        query = select(b.created_at, b.id)
        if within is not None:
            query = query.where(
                select(c.batch_id)
                .where(col(c.batch_id) == col(b.id), col(c.account).in_(list(within)))
                .exists()
            )
        if after is not None:
            stamp, last = after
            query = query.where(
                col(b.created_at) <= stamp,
                or_(col(b.created_at) < stamp, and_(col(b.created_at) == stamp, col(b.id) < last)),
            )
        query = query.order_by(col(b.created_at).desc(), col(b.id).desc()).limit(limit + 1)
        with Session(self.store.engine) as session:
            rows = [(as_utc(created), batch_id) for created, batch_id in session.execute(query)]
        page = rows[:limit]
        last_row = page[-1] if len(rows) > limit and page else None
        cursor = (last_row[0], last_row[1]) if last_row and last_row[0] is not None else None
        return [batch_id for _, batch_id in page], cursor

    def batch_stats(
        self, batch_ids: Sequence[str], within: Sequence[str] | None = None
    ) -> dict[str, BatchStats]:
        """Each batch's name, source, counts per status (every status listed), when it was made
        and last finished a job, and how many of its jobs finished in the last minute; of the
        accounts ``within`` only, if given (a batch with none of theirs is left out)."""
        if not batch_ids:
            return {}
        ids = list(batch_ids)
        with Session(self.store.engine) as session:
            batches = {
                batch.id: batch
                for batch in session.exec(select(Batch).where(col(Batch.id).in_(ids))).all()
            }
        recent = self.store.finished_lately(ids, within)
        counts = self.store.batch_counts(ids, within)
        out = {}
        for batch_id in ids:
            batch = batches.get(batch_id)
            if batch is None or not any(counts[batch_id].values()):
                continue
            stats = BatchStats(
                batch_id,
                as_utc(batch.created_at),
                counts[batch_id],
                name=batch.name,
                source=batch.source,
                recent=recent.get(batch_id, 0),
            )
            finished = as_utc(batch.last_finished_at) if stats.done else None
            out[batch_id] = dataclasses.replace(stats, finished=finished)
        return out

    def groups(
        self, batch_id: str, *, examples: int = 5, within: Sequence[str] | None = None
    ) -> list[Group]:
        """The batch's failed (and held) jobs grouped by status and error code, most common
        first (from the counts), each with its first ``examples`` jobs still kept; of the
        accounts ``within`` only, if given."""
        t = ProvisioningJob
        mine = [] if within is None else [col(t.account).in_(list(within))]
        grouped = {status.value for status in GROUPED}
        counted = sorted(
            (
                (status, code, n)
                for (status, code), n in self.store.batch_errors(batch_id, within).items()
                if status in grouped
            ),
            key=lambda row: (-row[2], row[1], row[0]),
        )
        out = []
        with Session(self.store.engine, expire_on_commit=False) as session:
            for status, code, n in counted:
                jobs = list(
                    session.exec(
                        select(t)
                        .where(
                            col(t.batch_id) == batch_id,
                            col(t.status) == status,
                            col(t.error_code) == code,
                            *mine,
                        )
                        .order_by(col(t.created_at), col(t.id))
                        .limit(examples)
                    ).all()
                )
                message = next((j.error_message for j in jobs if j.error_message), None)
                out.append(Group(status, code, n, message, jobs))
        return out

    # -- jobs ----------------------------------------------------------------------------------

    def recent_jobs(
        self, where: JobFilter, *, limit: int, before: Cursor | None = None
    ) -> tuple[list[ProvisioningJob], Cursor | None]:
        """A page of the jobs ``where`` matches, newest first, and the next page's cursor."""
        t = ProvisioningJob
        keyset: list[ColumnElement[bool]] = []
        if before is not None:
            stamp, last_id = before
            # <= first, so the planner can range-scan created_at; the OR settles equal stamps.
            keyset = [
                col(t.created_at) <= stamp,
                or_(
                    col(t.created_at) < stamp, and_(col(t.created_at) == stamp, col(t.id) < last_id)
                ),
            ]
        newest = (col(t.created_at).desc(), col(t.id).desc())
        if where.domain is not None or where.batch_id is not None:
            # Few rows per domain, at most a batch's per batch: their own indexes.
            splits: list[list[ColumnElement[bool]]] = [[]]
        else:
            statuses = [where.status] if where.status is not None else list(JobStatus)
            where = dataclasses.replace(where, status=None)  # each split names its status
            splits = [
                [col(t.status) == status, col(t.priority) == priority]
                for status in statuses
                for priority in Priority
            ]
        # Each split's newest keys first (index entries and the ids they point at), then only
        # the page's rows, in one query.
        keys: list[tuple[datetime, str]] = []
        with Session(self.store.engine, expire_on_commit=False) as session:
            for split in splits:
                query = select(t.created_at, t.id).where(*where.conditions(), *split, *keyset)
                for created, job_id in session.execute(
                    query.order_by(*newest).limit(limit + 1)
                ).all():
                    at = as_utc(created)
                    if at is not None:
                        keys.append((at, job_id))
            keys.sort(reverse=True)
            chosen = [job_id for _, job_id in keys[:limit]]
            rows = {
                job.id: job for job in session.exec(select(t).where(col(t.id).in_(chosen))).all()
            }
        page = [rows[job_id] for job_id in chosen if job_id in rows]
        cursor = keys[limit - 1] if len(keys) > limit and limit > 0 else None
        return page, cursor
