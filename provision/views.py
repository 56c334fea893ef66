"""Jobs, batches, quotas and sites as an operator reads them in a terminal: tables and CSV
rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from provisioner_types import Site
from worker.jobs.view import ShownJob, job_view

if TYPE_CHECKING:
    # Typing only: ``provision status`` shows a job without importing the tables.
    from worker.jobs.models import AuditEvent, ProvisioningJob
    from worker.jobs.queries import BatchSummary
    from worker.jobs.registry import WorkerProcess


def jobs_table(jobs: Sequence[ShownJob], *, with_ids: bool = True) -> str:
    """Jobs as a plain-text table, for terminals."""
    head = ("STATUS", "OPERATION", "DOMAIN", "GOALS", "SHARED LINKS", "ERROR")
    rows = [("ID", "KEY", *head) if with_ids else head]
    for job in jobs:
        shown = job_view(job, webhook=False)
        goals = ", ".join(f"{g.event_name or g.page_path}#{g.id}" for g in shown.goals)
        links = ", ".join(link.url for link in shown.shared_links)
        error = shown.error
        problem = f"{error.code}: {(error.message or '').strip()}" if error else ""
        cells = (shown.status.value, shown.operation.value, shown.domain, goals, links, problem)
        rows.append((shown.id, shown.idempotency_key, *cells) if with_ids else cells)
    return _table(rows)


def batch_table(summary: BatchSummary, eta: datetime | None = None) -> str:
    """A batch's counts per status and expected completion, then its failures with reasons."""
    from worker.jobs.queries import rate_label

    counts = "  ".join(f"{status}={n}" for status, n in summary.counts.items())
    lines = [f"batch {summary.batch_id}: {summary.total} job(s)  {counts}"]
    lines.append(f"rate: {rate_label(summary.finished_lately)}")
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


def workers_table(processes: Sequence[WorkerProcess], *, now: datetime) -> str:
    """The live worker processes; the last heartbeat as an age ("0.4 s ago")."""
    if not processes:
        return "no worker process is running"
    rows = [("HOST", "PID", "STARTED", "LAST HEARTBEAT", "RUNNING JOBS")]
    for p in processes:
        age = max(0.0, (now - p.last_heartbeat).total_seconds())
        started = p.started.isoformat(timespec="seconds")
        rows.append((p.host, str(p.pid), started, f"{age:.1f} s ago", str(p.running_jobs)))
    return _table(rows)


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
    shown = job_view(job, webhook=False)
    goals = [goal.model_dump() for goal in shown.goals]
    error = shown.error
    message = (error.message or "").strip() if error else ""
    cells: dict[str, Any] = {
        "id": shown.id,
        "idempotency_key": shown.idempotency_key,
        "batch_id": shown.batch_id,
        "account": job.account,
        "operation": shown.operation.value,
        "status": shown.status.value,
        "domain": shown.domain,
        "adopted": shown.adopted,
        "goals": json.dumps(goals, sort_keys=True) if goals else "",
        "shared_links": json.dumps({link.name: link.url for link in shown.shared_links})
        if shown.shared_links
        else "",
        "deleted": shown.deleted,
        "attempts": shown.attempts,
        "error_code": error.code if error else None,
        "error_message": message or None,
        "created_at": shown.created_at,
        "finished_at": shown.finished_at,
    }
    return {name: "" if cells[name] is None else str(cells[name]) for name in CSV_COLUMNS}


def sites_table(sites: Sequence[Site]) -> str:
    """Sites of the inventory as a plain-text table: domain, account, origin, goals, links."""
    rows = [("DOMAIN", "ACCOUNT", "TIMEZONE", "ORIGIN", "GOALS", "SHARED LINKS")]
    for site in sites:
        goals = ", ".join(f"{goal.natural_key}#{goal.id}" for goal in site.goals)
        links = ", ".join(link.name for link in site.shared_links)
        rows.append((site.domain, site.account, site.timezone, site.origin, goals, links))
    return _table(rows)


#: Columns of a site as a CSV row (``provision sites --csv``, ``provision export --csv``).
SITE_CSV_COLUMNS = (
    "account",
    "domain",
    "timezone",
    "origin",
    "job_id",
    "goals",
    "shared_links",
    "recorded_at",
    "confirmed_at",
    "custom_props",
    "guests",
    "managed_set",
    "tracker_script_configuration",
)


def site_csv_row(site: Site) -> dict[str, str]:
    """A site as one CSV row: goals (natural key -> Plausible id), shared links (name -> URL),
    custom properties and guests (email -> role) as JSON."""
    return {
        "account": site.account,
        "domain": site.domain,
        "timezone": site.timezone,
        "origin": site.origin,
        "job_id": site.job_id,
        "goals": json.dumps({goal.natural_key: goal.id for goal in site.goals}, sort_keys=True),
        "shared_links": json.dumps({link.name: link.url for link in site.shared_links}),
        "recorded_at": site.recorded_at,
        "confirmed_at": site.confirmed_at,
        "custom_props": json.dumps(site.custom_props),
        "guests": json.dumps({guest.email: guest.role for guest in site.guests}, sort_keys=True),
        "managed_set": site.managed_set or "",
        "tracker_script_configuration": ""
        if site.tracker_script_configuration is None
        else json.dumps(site.tracker_script_configuration),
    }


def audit_table(events: Sequence[AuditEvent]) -> str:
    """The audit trail as a plain-text table, newest first."""
    rows = [("WHEN", "WHO", "ACTION", "TARGET", "JOBS", "WHERE")]
    for event in events:
        target = event.target or ""
        if event.filter:
            target = " ".join(f"{k}={v}" for k, v in sorted(event.filter.items()))
        rows.append(
            (
                event.at.isoformat(timespec="seconds"),
                event.actor,
                event.action,
                target,
                str(event.count) if event.count else "",
                event.detail or "",
            )
        )
    return _table(rows)
