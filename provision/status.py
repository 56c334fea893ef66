"""Looking jobs up for ``provision status``: by job id, idempotency key, batch or domain.

A job by id or key is first read without SQLAlchemy (``quick_lookup``, ``worker.jobs.rows``),
so the command answers at once; batches, domains and anything unusual go through the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from provision import views
from worker.jobs import view
from worker.jobs.rows import read_job

if TYPE_CHECKING:
    from worker.jobs.models import ProvisioningJob
    from worker.jobs.queries import BatchSummary
    from worker.jobs.store import JobStore

Kind = Literal["auto", "job", "batch", "domain"]


@dataclass(frozen=True)
class Found:
    """One job, a batch, or the jobs of a domain; exactly one is set."""

    job: view.ShownJob | None = None
    batch: BatchSummary | None = None
    domain_jobs: list[ProvisioningJob] | None = None
    #: A batch's expected completion.
    eta: datetime | None = None

    def as_json(self) -> Any:
        """JSON-ready: the job, the batch, or the domain's jobs, as the HTTP service answers."""
        if self.job is not None:
            return view.job_view(self.job).model_dump(mode="json")
        if self.batch is not None:
            return view.batch_view(self.batch, self.eta).model_dump(mode="json")
        return [view.job_view(job).model_dump(mode="json") for job in self.domain_jobs or []]

    def as_text(self) -> str:
        if self.job is not None:
            return views.jobs_table([self.job])
        if self.batch is not None:
            return views.batch_table(self.batch, self.eta)
        return views.jobs_table(self.domain_jobs or [])


def quick_lookup(database_url: str, ref: str) -> Found | None:
    """A job by id or idempotency key, as ``lookup`` finds it, read with the database's own
    driver; None when there is no such job or it cannot be read that way (then ``lookup``)."""
    job = read_job(database_url, ref)
    return Found(job=job) if job is not None else None


def lookup(
    store: JobStore,
    ref: str,
    kind: Kind = "auto",
    batch_eta: Callable[[str], datetime | None] | None = None,
) -> Found | None:
    """Find ``ref``; with ``auto``, try a job id or key, then a batch id, then a domain. With
    ``batch_eta`` (``Reporter.batch_eta``), a batch carries its expected completion: a function,
    so that looking up a job does not build the quota reporter."""
    if kind in ("auto", "job"):
        job = store.find(ref)
        if job is not None:
            return Found(job=job)
    if kind in ("auto", "batch"):
        summary = store.batch_summary(ref)
        if summary.total:
            eta = batch_eta(ref) if batch_eta is not None else None
            return Found(batch=summary, eta=eta)
    if kind in ("auto", "domain"):
        from producers.events import parse_domain
        from worker.errors import InvalidRequestError

        try:
            domain = parse_domain(ref)
        except InvalidRequestError:
            return None
        jobs = store.find_by_domain(domain)
        if jobs:
            return Found(domain_jobs=jobs)
    return None
