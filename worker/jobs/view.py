"""What callers see of a job, a batch and a site of the inventory: the models of ``provisioner_types`` built from the
rows, once, for the HTTP service, the CLI's ``--json``, the Python API and the completion
webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from provisioner_types import (
    Batch,
    Failure,
    FailureError,
    Goal,
    Job,
    JobError,
    SharedLink,
    Site,
    SiteGoal,
    SiteGuest,
    SiteLink,
    WebhookDelivery,
    WebhookEvent,
)
from worker.jobs.states import DeliveryStatus, JobStatus, Operation
from worker.times import as_utc

if TYPE_CHECKING:
    # Typing only: at run time it would close a cycle (table -> webhooks -> view -> queries),
    # and ``provision status`` shows a job without importing the tables (``worker.jobs.rows``).
    from worker.jobs import models
    from worker.jobs.inventory import SiteView
    from worker.jobs.queries import BatchSummary
    from worker.jobs.specs import Progress


class ShownWebhook(Protocol):
    """What ``webhook_view`` reads of a completion webhook: a ``models.WebhookDelivery``, or a
    ``worker.jobs.rows.WebhookRecord``."""

    @property
    def event_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def last_status(self) -> int | None: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def next_attempt_at(self) -> datetime | None: ...
    @property
    def created_at(self) -> datetime | None: ...
    @property
    def delivered_at(self) -> datetime | None: ...


class ShownJob(Protocol):
    """What ``job_view`` reads of a job: a ``models.ProvisioningJob``, or a
    ``worker.jobs.rows.JobRecord``."""

    @property
    def id(self) -> str: ...
    @property
    def idempotency_key(self) -> str: ...
    @property
    def operation(self) -> Operation: ...
    @property
    def status(self) -> JobStatus: ...
    @property
    def domain(self) -> str: ...
    @property
    def batch_id(self) -> str | None: ...
    @property
    def progress(self) -> Progress: ...
    @property
    def attempts(self) -> int: ...
    @property
    def error_code(self) -> str | None: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def error_status(self) -> int | None: ...
    @property
    def next_attempt_at(self) -> datetime | None: ...
    @property
    def created_at(self) -> datetime | None: ...
    @property
    def updated_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def webhook(self) -> ShownWebhook | None: ...


def job_view(job: ShownJob, *, webhook: bool = True) -> Job:
    """The job and, unless ``webhook`` is False, its latest completion webhook."""
    progress = job.progress
    site = progress.site
    error = (
        JobError(code=job.error_code, message=job.error_message, http_status=job.error_status)
        if job.error_code
        else None
    )
    return Job(
        id=job.id,
        idempotency_key=job.idempotency_key,
        operation=job.operation,
        status=job.status,
        done=job.status.done,
        # As Plausible normalised it once the site exists; until then, as we normalised it.
        domain=site.domain if site else job.domain,
        adopted=site.adopted if site else None,
        existed=site.existed if site else None,
        batch_id=job.batch_id,
        goals=[Goal(**goal.model_dump()) for goal in progress.goals.values()],
        shared_links=[
            SharedLink(name=name, url=url) for name, url in progress.shared_links.items()
        ],
        deleted=progress.deleted,
        attempts=job.attempts,
        error=error,
        next_attempt_at=_iso(job.next_attempt_at),
        created_at=_iso(job.created_at),
        updated_at=_iso(job.updated_at),
        finished_at=_iso(job.finished_at),
        webhook=webhook_view(job.webhook) if webhook else None,
    )


def webhook_view(delivery: ShownWebhook | None) -> WebhookDelivery | None:
    """A completion webhook's delivery: how many attempts, the last answer; None: no webhook
    (the job is not done, or has no URL). The URL is not shown (it may carry a token)."""
    if delivery is None:
        return None
    pending = delivery.status == DeliveryStatus.pending
    return WebhookDelivery(
        event_id=delivery.event_id,
        type=delivery.type,
        status=DeliveryStatus(delivery.status).value,
        attempts=delivery.attempts,
        last_status=delivery.last_status,
        last_error=delivery.last_error,
        next_attempt_at=_iso(delivery.next_attempt_at) if pending else None,
        created_at=_iso(delivery.created_at),
        delivered_at=_iso(delivery.delivered_at),
    )


def webhook_event(
    job: models.ProvisioningJob, *, event_id: str, type: str, created: datetime
) -> WebhookEvent:
    """The body of the completion webhook ``event_id``: the job as it is now, just finished."""
    return WebhookEvent(
        id=event_id,
        type=type,
        created=_iso(created),
        job=job_view(job, webhook=False),
    )


def batch_view(summary: BatchSummary, eta: datetime | None = None) -> Batch:
    """A batch: how many jobs are in each status, whether all are done, when it should be done
    (``expected_completion``, from the quota and the work ahead of it), its failures counted by
    error code, and the first failed jobs (``failures_truncated`` when there are more: page
    through them with ``GET /jobs?batch_id=…&status=failed`` or ``provision jobs``)."""
    batch = summary.batch
    return Batch(
        batch_id=summary.batch_id,
        name=batch.name if batch else None,
        source=batch.source if batch else None,
        created_at=_iso(batch.created_at) if batch else None,
        total=summary.total,
        done=summary.done,
        finished_last_minute=summary.finished_lately,
        expected_completion=_iso(eta),
        counts=summary.counts,
        failures_by_code=summary.failures_by_code,
        failures_truncated=summary.truncated,
        failures=[
            Failure(
                id=job.id,
                idempotency_key=job.idempotency_key,
                domain=job.domain,
                error=FailureError(code=job.error_code, message=job.error_message),
            )
            for job in summary.failures
        ],
    )


def site_view(found: SiteView) -> Site:
    """A site of the inventory with its goals, shared links, custom properties and guests."""
    site = found.site
    return Site(
        account=site.account,
        domain=site.domain,
        timezone=site.timezone,
        origin=site.origin,
        job_id=site.job_id,
        recorded_at=_iso(site.created_at) or "",
        confirmed_at=_iso(site.confirmed_at) or "",
        goals=[
            SiteGoal(
                natural_key=goal.natural_key,
                id=goal.goal_id,
                goal_type=goal.goal_type,
                event_name=goal.event_name,
                page_path=goal.page_path,
                display_name=goal.display_name,
                custom_props=goal.custom_props,
                confirmed_at=_iso(goal.confirmed_at) or "",
            )
            for goal in found.goals
        ],
        shared_links=[
            SiteLink(name=link.name, url=link.url, confirmed_at=_iso(link.confirmed_at) or "")
            for link in found.links
        ],
        custom_props=[prop.name for prop in found.props],
        guests=[
            SiteGuest(email=g.email, role=g.role, confirmed_at=_iso(g.confirmed_at) or "")
            for g in found.guests
        ],
        managed_set=site.managed_set,
        tracker_script_configuration=site.tracker,
    )


def _iso(value: datetime | None) -> str | None:
    stamp = as_utc(value)
    return stamp.isoformat() if stamp is not None else None
