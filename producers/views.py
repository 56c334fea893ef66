"""What callers see of a job: one JSON-ready dict, shared by the CLI, the Python API and HTTP."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from worker.models import DeliveryStatus, ProvisioningJob, WebhookDelivery
from worker.store import BatchSummary, as_utc
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


def jobs_table(jobs: list[ProvisioningJob], *, with_ids: bool = True) -> str:
    """Jobs as a plain-text table, for terminals."""
    head = ("STATUS", "OPERATION", "DOMAIN", "GOALS", "SHARED LINKS", "ERROR")
    rows = [("ID", "KEY", *head) if with_ids else head]
    for job in jobs:
        view = job_view(job)
        goals = ", ".join(
            f"{g.get('event_name') or g.get('page_path')}#{g.get('id')}" for g in view["goals"]
        )
        links = ", ".join(link["url"] for link in view["shared_links"])
        error = view["error"]
        problem = f"{error['code']}: {(error['message'] or '').strip()}" if error else ""
        cells = (view["status"], view["operation"], view["domain"], goals, links, problem)
        rows.append((view["id"], view["idempotency_key"], *cells) if with_ids else cells)
    return _table(rows)


def batch_table(summary: BatchSummary, eta: datetime | None = None) -> str:
    """A batch's counts per status and expected completion, then its failures with reasons."""
    counts = "  ".join(f"{status}={n}" for status, n in summary.counts.items())
    lines = [f"batch {summary.batch_id}: {summary.total} job(s)  {counts}"]
    if eta is not None:
        lines.append(f"expected completion: {eta.isoformat(timespec='seconds')}")
    if summary.failures_by_code:
        by_code = ", ".join(f"{code} {n}" for code, n in summary.failures_by_code.items())
        lines.append(f"failures by code: {by_code}")
    if summary.failures:
        rows = [("ID", "KEY", "DOMAIN", "ERROR")]
        for job in summary.failures:
            message = (job.error_message or "").strip()
            rows.append((job.id, job.idempotency_key, job.domain, f"{job.error_code}: {message}"))
        lines += ["failures:", _table(rows)]
    if summary.truncated:
        more = summary.counts["failed"] - len(summary.failures)
        lines.append(
            f"... and {more} more: provision jobs --batch {summary.batch_id} --status failed"
        )
    return "\n".join(lines)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def quota_table(quotas: list[dict[str, Any]]) -> str:
    """``Reporter.quotas()`` for terminals: a row per quota and window."""
    rows = [("QUOTA", "ACCOUNTS", "WINDOW", "USED", "LIMIT", "REMAINING", "RESETS AT", "WAITING")]
    paused = [
        f"account {a['name']} is paused ({a['paused']['code']}): {a['paused']['message'].strip()}"
        for quota in quotas
        for a in quota["accounts"]
        if a.get("paused")
    ]
    for quota in quotas:
        accounts = ",".join(a["name"] for a in quota["accounts"])
        waiting = " ".join(f"{k}={v}" for k, v in quota["waiting"].items())
        for window in quota["windows"]:
            state = "spent (429)" if window["spent"] else str(window["remaining"])
            rows.append(
                (
                    quota["quota"],
                    accounts,
                    f"{window['kind']} ({window['seconds']:g}s)",
                    str(window["used"]),
                    str(window["limit"]),
                    state,
                    window["resets_at"],
                    waiting,
                )
            )
    return "\n".join([_table(rows), *paused])


#: Columns of a job as a CSV row (``provision jobs --csv``, ``provision export --csv``).
CSV_COLUMNS = (
    "id",
    "idempotency_key",
    "batch_id",
    "account",
    "operation",
    "status",
    "domain",
    "adopted",
    "goals",
    "shared_links",
    "deleted",
    "attempts",
    "error_code",
    "error_message",
    "created_at",
    "finished_at",
)


def csv_row(job: ProvisioningJob) -> dict[str, str]:
    """A job as one CSV row: goals (with their ids) and shared links (name -> URL) as JSON."""
    view = job_view(job)
    error = view["error"] or {}
    cells: dict[str, Any] = {
        **{name: view.get(name) for name in CSV_COLUMNS},
        "account": job.account,
        "goals": json.dumps(view["goals"], sort_keys=True) if view["goals"] else "",
        "shared_links": json.dumps({link["name"]: link["url"] for link in view["shared_links"]})
        if view["shared_links"]
        else "",
        "error_code": error.get("code"),
        "error_message": (error.get("message") or "").strip() or None,
    }
    return {name: "" if cells[name] is None else str(cells[name]) for name in CSV_COLUMNS}
