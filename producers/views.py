"""What callers see of a job: one JSON-ready dict, shared by the CLI, the Python API and HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.models import ProvisioningJob
from worker.store import as_utc


def job_view(job: ProvisioningJob) -> dict[str, Any]:
    progress = job.progress
    site = progress.get("site") or {}
    error = (
        {"code": job.error_code, "message": job.error_message, "http_status": job.error_status}
        if job.error_code
        else None
    )
    return {
        "id": job.id,
        "idempotency_key": job.idempotency_key,
        "operation": job.operation.value,
        "status": job.status.value,
        "done": job.status.done,
        # As Plausible normalised it once the site exists; until then, as we normalised it.
        "domain": site.get("domain", job.domain),
        "adopted": site.get("adopted"),
        "batch_id": job.batch_id,
        "goals": list(progress.get("goals", {}).values()),
        "shared_links": [
            {"name": name, "url": url} for name, url in progress.get("shared_links", {}).items()
        ],
        "deleted": progress.get("deleted"),
        "attempts": job.attempts,
        "error": error,
        "next_attempt_at": _iso(job.next_attempt_at),
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "finished_at": _iso(job.finished_at),
    }


def _iso(value: datetime | None) -> str | None:
    stamp = as_utc(value)
    return stamp.isoformat() if stamp is not None else None
