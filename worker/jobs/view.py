"""What callers see of a job and of a batch: one JSON-ready shape, shared by the HTTP service,
the CLI's ``--json``, the Python API and the completion webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.jobs.models import ProvisioningJob, WebhookDelivery
from worker.jobs.queries import BatchSummary
from worker.jobs.states import DeliveryStatus
from worker.times import as_utc
from worker.webhooks import job_document


def job_view(job: ProvisioningJob) -> dict[str, Any]:
    """The job as ``worker.webhooks.job_document`` shows it (a webhook's ``job`` is the same),
    and its latest completion webhook."""
    return {**job_document(job), "webhook": webhook_view(job.webhook)}


def webhook_view(delivery: WebhookDelivery | None) -> dict[str, Any] | None:
    """A completion webhook's delivery: how many attempts, the last answer; None: no webhook
    (the job is not done, or has no URL). The URL is not shown (it may carry a token)."""
    if delivery is None:
        return None
    pending = delivery.status == DeliveryStatus.pending
    return {
        "event_id": delivery.event_id,
        "type": delivery.type,
        "status": DeliveryStatus(delivery.status).value,
        "attempts": delivery.attempts,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "next_attempt_at": _iso(delivery.next_attempt_at) if pending else None,
        "created_at": _iso(delivery.created_at),
        "delivered_at": _iso(delivery.delivered_at),
    }


def _iso(value: datetime | None) -> str | None:
    stamp = as_utc(value)
    return stamp.isoformat() if stamp is not None else None


def batch_view(summary: BatchSummary, eta: datetime | None = None) -> dict[str, Any]:
    """A batch: how many jobs are in each status, whether all are done, when it should be done
    (``expected_completion``, from the quota and the work ahead of it), its failures counted by
    error code, and the first failed jobs (``failures_truncated`` when there are more: page
    through them with ``GET /jobs?batch_id=…&status=failed`` or ``provision jobs``)."""
    return {
        "batch_id": summary.batch_id,
        "total": summary.total,
        "done": summary.done,
        "expected_completion": _iso(eta),
        "counts": summary.counts,
        "failures_by_code": summary.failures_by_code,
        "failures_truncated": summary.truncated,
        "failures": [
            {
                "id": job.id,
                "idempotency_key": job.idempotency_key,
                "domain": job.domain,
                "error": {"code": job.error_code, "message": job.error_message},
            }
            for job in summary.failures
        ],
    }
