"""A batch: its jobs counted by status, its failures, and when it should be done."""

from __future__ import annotations

from pydantic import Field

from provisioner_types.jobs import Timestamp
from provisioner_types.model import Model


class FailureError(Model):
    code: str | None
    message: str | None


class Failure(Model):
    id: str
    idempotency_key: str
    domain: str
    error: FailureError


class Batch(Model):
    """A batch (``worker.jobs.view.batch_view``)."""

    batch_id: str
    name: str | None = Field(
        default=None, description="For people: the file's name, a label, or the source and day."
    )
    source: str | None = Field(
        default=None, description="Where its jobs came from: `import`, `http`, `api`, `stream`…"
    )
    created_at: Timestamp | None = None
    total: int
    done: bool
    finished_last_minute: int = Field(
        default=0,
        description="Its rate: jobs that reached a final status in the last 60 s, the figure "
        "the dashboard and `provision status` show as jobs/min.",
    )
    expected_completion: Timestamp | None = Field(
        description="When its last job should be done, from the quota and the work ahead of it."
    )
    counts: dict[str, int] = Field(description="Jobs per status, every status listed.")
    failures_by_code: dict[str, int] = Field(description="Failed jobs per error code.")
    failures_truncated: bool = Field(
        description="More jobs failed than `failures` lists: page through them with "
        "`GET /jobs?batch_id=…&status=failed`."
    )
    failures: list[Failure]
