"""The dashboard's reads of the status table: each bounded by a page, on an index.

- Batch ids come from a loose index scan of ``ix_provisioning_jobs_batch_id`` (one index seek per
  batch, however many jobs each has); each batch's submission time (its first job's
  ``created_at``, which never changes once the batch exists) is read once per process and kept.
- Counts per status of the batches on a page: one GROUP BY on ``batch_id`` (indexed), reading
  the rows of those batches only.
- Lists of jobs, newest first, in keyset pages: by domain, batch, id or key on their indexes;
  otherwise one query per (status, priority) on ``ix_provisioning_jobs_admission`` (status,
  priority, created_at), which reads ``limit`` index entries each, merged here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, text
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from provision.actions import APPLIES_TO
from provision.cursors import Cursor
from provision.dashboard.cache import Recent
from worker.jobs.filters import JobFilter
from worker.jobs.models import ProvisioningJob
from worker.jobs.states import FINAL_STATUSES, UNFINISHED, JobStatus, Priority
from worker.jobs.store import JobStore
from worker.times import as_utc, utcnow

#: The order of the statuses in a progress bar: done first (in the enum's order), then work in
#: flight, the nearest to done first.
BAR_ORDER = (*(s for s in JobStatus if s in FINAL_STATUSES), *reversed(UNFINISHED))
#: Statuses a group of errors is shown for: those an action applies to (retry the failed,
#: cancel the queued or waiting, held by the error).
GROUPED = tuple(s for statuses in APPLIES_TO.values() for s in statuses)
#: Batches whose first start and last finish are remembered, at most.
MAX_CACHED = 10_000
#: Batches whose submission time is remembered, at most (every page of batches sorts them all).
MAX_SUBMITTED = 100_000
#: Jobs finished within this many seconds make a batch's rate.
RATE_SECONDS = 60


@dataclass(frozen=True)
class BatchStats:
    batch_id: str
    submitted: datetime | None
    counts: dict[str, int]
    started: datetime | None = None
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
        #: Batch id -> its first job's ``created_at`` (it never changes).
        self._submitted: Recent[str, datetime] = Recent(MAX_SUBMITTED)
        #: Batch id -> (its counts when read, first start, last finish).
        self._spans: Recent[str, tuple[dict[str, int], datetime | None, datetime | None]] = Recent(
            MAX_CACHED
        )

    # -- batches -------------------------------------------------------------------------------

    def batch_ids(self) -> list[str]:
        """Every batch id, by a loose index scan: one seek per batch."""
        t = ProvisioningJob.__tablename__
        query = text(
            f"WITH RECURSIVE b(id) AS ("
            f"SELECT max(batch_id) FROM {t} "
            f"UNION ALL SELECT (SELECT max(batch_id) FROM {t} WHERE batch_id < b.id) "
            f"FROM b WHERE b.id IS NOT NULL) SELECT id FROM b WHERE id IS NOT NULL"
        )
        with Session(self.store.engine) as session:
            return [str(row[0]) for row in session.execute(query).all()]

    def submitted(self, batch_ids: Sequence[str]) -> dict[str, datetime]:
        """When each batch's first job was enqueued; read once per batch and remembered."""
        known = {b: s for b in batch_ids if (s := self._submitted.get(b)) is not None}
        missing = [b for b in batch_ids if b not in known]
        t = ProvisioningJob
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            with Session(self.store.engine) as session:
                rows = session.execute(
                    select(t.batch_id, func.min(t.created_at))
                    .where(col(t.batch_id).in_(chunk))
                    .group_by(col(t.batch_id))
                ).all()
            for batch_id, created in rows:
                stamp = as_utc(created)
                if batch_id is not None and stamp is not None:
                    self._submitted.put(str(batch_id), stamp)
                    known[str(batch_id)] = stamp
        return {b: known[b] for b in batch_ids if b in known}

    def batch_page(
        self, *, limit: int, after: Cursor | None = None
    ) -> tuple[list[str], Cursor | None]:
        """A page of batch ids, newest first, and the cursor of the next page (None: last)."""
        submitted = self.submitted(self.batch_ids())
        ordered = sorted(submitted.items(), key=lambda item: (item[1], item[0]), reverse=True)
        if after is not None:
            ordered = [(b, s) for b, s in ordered if (s, b) < after]
        page = ordered[:limit]
        more = len(ordered) > limit
        return [b for b, _ in page], (page[-1][1], page[-1][0]) if more and page else None

    def batch_stats(self, batch_ids: Sequence[str]) -> dict[str, BatchStats]:
        """Counts per status (every status listed), first start, last finish and recent
        finishes of each batch.

        The counts are an index-only GROUP BY on ``ix_provisioning_jobs_admission_batch``
        (status, priority, batch_id, created_at); the recent finishes come from
        ``ix_provisioning_jobs_status_finished``; first start and last finish are read from
        the batch's rows only when its counts changed since they were last read."""
        if not batch_ids:
            return {}
        ids = list(batch_ids)
        t = ProvisioningJob
        since = utcnow() - timedelta(seconds=RATE_SECONDS)
        counts: dict[str, dict[str, int]] = {}
        recent: dict[str, int] = {}
        wanted = set(ids)
        with Session(self.store.engine) as session:
            # One query per (status, priority): each seeks the covering index
            # ix_provisioning_jobs_admission_batch (status, priority, batch_id, created_at).
            for status in JobStatus:
                for priority in Priority:
                    for batch_id, n in session.execute(
                        select(t.batch_id, func.count())
                        .where(
                            col(t.status) == status,
                            col(t.priority) == priority,
                            col(t.batch_id).in_(ids),
                        )
                        .group_by(col(t.batch_id))
                    ).all():
                        entry = counts.setdefault(str(batch_id), {s.value: 0 for s in JobStatus})
                        entry[status.value] += int(n)
            # The jobs finished lately, on ix_provisioning_jobs_status_finished: as many as the
            # quota let finish in RATE_SECONDS, whatever the table holds.
            for status in sorted(FINAL_STATUSES):
                for (batch_id,) in session.execute(
                    select(t.batch_id).where(col(t.status) == status, col(t.finished_at) >= since)
                ).all():
                    if batch_id in wanted:
                        recent[str(batch_id)] = recent.get(str(batch_id), 0) + 1
        spans = self._times(counts)
        submitted = self.submitted(list(counts))
        out = {}
        for batch_id, batch_counts in counts.items():
            started, finished = spans[batch_id]
            stats = BatchStats(
                batch_id,
                submitted.get(batch_id),
                batch_counts,
                started=started,
                recent=recent.get(batch_id, 0),
            )
            out[batch_id] = dataclasses.replace(stats, finished=finished if stats.done else None)
        return out

    def _times(
        self, counts: dict[str, dict[str, int]]
    ) -> dict[str, tuple[datetime | None, datetime | None]]:
        """(first start, last finish) of each batch: re-read only for batches whose counts
        changed since the last read (a done batch that nobody retries is read once)."""
        known: dict[str, tuple[datetime | None, datetime | None]] = {}
        for batch_id, batch_counts in counts.items():
            kept = self._spans.get(batch_id)
            if kept is not None and kept[0] == batch_counts:
                known[batch_id] = kept[1:]
        stale = [b for b in counts if b not in known]
        if stale:
            t = ProvisioningJob
            with Session(self.store.engine) as session:
                rows = session.execute(
                    select(t.batch_id, func.min(t.started_at), func.max(t.finished_at))
                    .where(col(t.batch_id).in_(stale))
                    .group_by(col(t.batch_id))
                ).all()
            read = {str(b): (as_utc(started), as_utc(finished)) for b, started, finished in rows}
            for batch_id in stale:
                started, finished = read.get(batch_id, (None, None))
                self._spans.put(batch_id, (dict(counts[batch_id]), started, finished))
                known[batch_id] = (started, finished)
        return known

    def groups(self, batch_id: str, *, examples: int = 5) -> list[Group]:
        """The batch's failed (and held) jobs grouped by status and error code, most common
        first, each with its first ``examples`` jobs."""
        t = ProvisioningJob
        with Session(self.store.engine, expire_on_commit=False) as session:
            counted = session.execute(
                select(t.status, t.error_code, func.count())
                .where(
                    col(t.batch_id) == batch_id,
                    col(t.status).in_(GROUPED),
                    col(t.error_code).is_not(None),
                )
                .group_by(col(t.status), col(t.error_code))
                .order_by(func.count().desc(), col(t.error_code))
            ).all()
            out = []
            for status, code, n in counted:
                jobs = list(
                    session.exec(
                        select(t)
                        .where(
                            col(t.batch_id) == batch_id,
                            col(t.status) == status,
                            col(t.error_code) == code,
                        )
                        .order_by(col(t.created_at), col(t.id))
                        .limit(examples)
                    ).all()
                )
                message = next((j.error_message for j in jobs if j.error_message), None)
                out.append(Group(JobStatus(status).value, str(code), int(n), message, jobs))
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
