"""Reads: jobs by id, key, batch, domain or filter, and a batch's summary."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import and_, func, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from worker.jobs.counts import Counts
from worker.jobs.db import DriverSelect, make_reader, table_of
from worker.jobs.filters import JobFilter
from worker.jobs.models import Batch, ProvisioningJob, WebhookDelivery
from worker.jobs.rows import JOB_BY_REF, JobRecord, WebhookRecord
from worker.jobs.states import JobStatus


@dataclass(frozen=True)
class BatchSummary:
    batch_id: str
    total: int
    counts: dict[str, int]
    #: The first failed jobs; ``truncated`` when there are more.
    failures: list[ProvisioningJob]
    failures_by_code: dict[str, int] = field(default_factory=dict)
    #: The batch's row: its name, source and times (None for a batch never written).
    batch: Batch | None = None
    #: Its rate: jobs finished in the last ``RATE_SECONDS`` (``Queries.finished_lately``).
    finished_lately: int = 0

    @property
    def truncated(self) -> bool:
        return len(self.failures) < self.counts.get(JobStatus.failed.value, 0)

    @property
    def done(self) -> bool:
        return self.total > 0 and all(
            JobStatus(status).done for status, n in self.counts.items() if n
        )


#: Ids per statement of ``Queries.updated_at`` (SQLite takes up to 32,766 parameters).
_IDS_PER_QUERY = 500
#: A batch's rate is what it finished in this many seconds, shown as jobs per minute.
RATE_SECONDS = 60


def rate_label(finished: int) -> str:
    """A rate as every view words it, with its window."""
    per_minute = finished * 60 / RATE_SECONDS
    return f"{per_minute:g} jobs/min (last {RATE_SECONDS} s)"


class Queries(Counts):
    """What readers may do: look jobs up."""

    def get_by_key(self, key: str) -> ProvisioningJob | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.exec(
                select(ProvisioningJob).where(ProvisioningJob.idempotency_key == key)
            ).first()

    def find(self, ref: str) -> ProvisioningJob | None:
        """A job by its id or its idempotency key (the id wins if both match), in one query:
        the one ``provision status`` runs without SQLAlchemy (``worker.jobs.rows``)."""
        query = sa.select(ProvisioningJob).from_statement(sa.text(JOB_BY_REF))
        with Session(self.engine, expire_on_commit=False) as session:
            return session.scalars(query, {"ref": ref}).first()

    @functools.cached_property
    def reader(self) -> Engine:
        """The engine ``poll`` reads with (``worker.jobs.db.make_reader``), made when first
        used."""
        return make_reader(self.engine)

    def poll(self, ref: str) -> JobRecord | None:
        """``find`` for pollers, which ask often: the columns of the job its view shows and its
        latest webhook, in one statement on the reader pool, straight from the driver's
        cursor (``DriverSelect``: without it, SQLAlchemy's work per execute and an ORM object
        took three quarters of a poll's read)."""
        rows = self._poll.rows({"ref": ref})
        if not rows:
            return None
        n = len(_POLLED_JOB)
        chosen = next((row for row in rows if row[0] == ref), rows[0])
        mine = [row[n:] for row in rows if row[0] == chosen[0] and row[n] is not None]
        # The latest, in the order ProvisioningJob.webhooks keeps them.
        latest = max(mine, key=lambda hook: (hook[_CREATED], hook[0]), default=None)
        webhook = WebhookRecord(*latest) if latest is not None else None
        return JobRecord(**dict(zip(_POLLED_JOB, chosen[:n], strict=True)), webhook=webhook)

    @functools.cached_property
    def _poll(self) -> DriverSelect:
        return DriverSelect(self.reader, _poll_statement())

    def updated_at(self, job_ids: Sequence[str]) -> dict[str, datetime]:
        """When each of these jobs last changed (a job deleted is left out), on the reader
        pool: what ``?wait`` pollers check at a wake-up (``provision.http.changes``)."""
        jobs = table_of(ProvisioningJob)
        found: dict[str, datetime] = {}
        with self.reader.connect() as connection:
            for start in range(0, len(job_ids), _IDS_PER_QUERY):
                chunk = job_ids[start : start + _IDS_PER_QUERY]
                rows = connection.execute(
                    sa.select(jobs.c.id, jobs.c.updated_at).where(jobs.c.id.in_(chunk))
                )
                found.update({row.id: row.updated_at for row in rows})
        return found

    def batch(self, batch_id: str) -> list[ProvisioningJob]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.exec(
                    select(ProvisioningJob)
                    .where(ProvisioningJob.batch_id == batch_id)
                    .order_by(col(ProvisioningJob.created_at))
                ).all()
            )

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

    def batch_summary(
        self, batch_id: str, *, max_failures: int = 100, within: Sequence[str] | None = None
    ) -> BatchSummary:
        """How many jobs of the batch are in each status, its failures counted by error code
        (both from the counts, so they outlive pruned jobs), and the first failed jobs still
        kept (up to ``max_failures``; page through the rest with ``list_jobs``); of the accounts
        ``within`` only, if given."""
        t = ProvisioningJob
        counts = self.batch_counts([batch_id], within)[batch_id]
        mine = [] if within is None else [col(t.account).in_(list(within))]
        with Session(self.engine, expire_on_commit=False) as session:
            batch = session.get(Batch, batch_id)
            failures = list(
                session.exec(
                    select(t)
                    .where(t.batch_id == batch_id, col(t.status) == JobStatus.failed, *mine)
                    .order_by(col(t.created_at), col(t.id))
                    .limit(max_failures)
                ).all()
            )
        by_code = {
            code: n
            for (status, code), n in self.batch_errors(batch_id, within).items()
            if status == JobStatus.failed.value
        }
        by_code = dict(sorted(by_code.items(), key=lambda item: (-item[1], item[0])))
        lately = self.finished_lately([batch_id], within).get(batch_id, 0)
        return BatchSummary(
            batch_id, sum(counts.values()), counts, failures, by_code, batch, lately
        )

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

    def jobs_by_domain(
        self, where: JobFilter, *, limit: int = 500, after: tuple[str, str] | None = None
    ) -> list[ProvisioningJob]:
        """Jobs matching ``where`` by domain (then id), ``limit`` at a time after the
        ``(domain, id)`` of the last job of a page: a stable order for exports."""
        t = ProvisioningJob
        query = select(t).where(*where.conditions())
        if after is not None:
            domain, last_id = after
            query = query.where(
                or_(col(t.domain) > domain, and_(col(t.domain) == domain, col(t.id) > last_id))
            )
        query = query.order_by(col(t.domain), col(t.id)).limit(limit)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(query).all())

    def finished_lately(
        self, batch_ids: Sequence[str], within: Sequence[str] | None = None
    ) -> dict[str, int]:
        """The rate of each batch, the one figure every view shows: how many of its jobs (of
        the accounts ``within``, if given) reached a final status in the last ``RATE_SECONDS``
        (on ``ix_provisioning_jobs_batch_finished``)."""
        t = ProvisioningJob
        since = self.clock() - timedelta(seconds=RATE_SECONDS)
        mine = [] if within is None else [col(t.account).in_(list(within))]
        with Session(self.engine) as session:
            rows = session.execute(
                select(t.batch_id, func.count())
                .where(col(t.batch_id).in_(list(batch_ids)), col(t.finished_at) >= since, *mine)
                .group_by(col(t.batch_id))
            ).all()
        return {str(batch_id): int(n) for batch_id, n in rows}

    def count(self, where: JobFilter, statuses: Sequence[JobStatus] | None = None) -> int:
        """How many jobs ``where`` matches (in ``statuses``, if given)."""
        t = ProvisioningJob
        query = select(func.count()).where(*where.conditions())
        if statuses is not None:
            query = query.where(col(t.status).in_(list(statuses)))
        with Session(self.engine) as session:
            return int(session.execute(query).scalar() or 0)


#: The columns ``poll`` reads, in the order of their dataclasses' fields.
_POLLED_JOB = [f.name for f in dataclasses.fields(JobRecord) if f.name != "webhook"]
_POLLED_WEBHOOK = [f.name for f in dataclasses.fields(WebhookRecord)]
_CREATED = _POLLED_WEBHOOK.index("created_at")


def _poll_statement() -> sa.Select[tuple[object, ...]]:
    """A job by id or key (``:ref``) with each of its webhooks: the job's columns ``JobRecord``
    holds, then the webhook's, NULL when it has none."""
    jobs, hooks = table_of(ProvisioningJob), table_of(WebhookDelivery)
    ref = sa.bindparam("ref", type_=sa.String())
    return (
        sa.select(
            *(jobs.c[name] for name in _POLLED_JOB),
            *(hooks.c[name].label(f"webhook_{name}") for name in _POLLED_WEBHOOK),
        )
        .select_from(jobs.outerjoin(hooks, hooks.c.job_id == jobs.c.id))
        .where(or_(jobs.c.id == ref, jobs.c.idempotency_key == ref))
    )
