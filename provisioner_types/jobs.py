"""A job as every caller sees it (``Job``), a page of them, and the body of its completion
webhook (``WebhookEvent``). Timestamps are ISO 8601 strings in UTC, as the service sends them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from provisioner_types.model import Model
from provisioner_types.states import JobStatus, Operation

#: An ISO 8601 timestamp in UTC, e.g. ``2025-01-31T12:00:00.123456+00:00``.
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]

#: The event a completion webhook sends, by the job's final status.
EventType = Literal["job.succeeded", "job.failed", "job.cancelled"]


class JobError(Model):
    code: str
    message: str | None
    http_status: int | None = Field(description="Plausible's HTTP status, when it answered one.")


class Goal(Model):
    """A goal as Plausible holds it (``worker.jobs.specs.GoalRecord``)."""

    id: int
    goal_type: str
    event_name: str | None = None
    page_path: str | None = None
    display_name: str
    custom_props: dict[str, str] = Field(default_factory=dict)


class SharedLink(Model):
    name: str
    url: str


class WebhookDelivery(Model):
    """A job's completion webhook (README, "Completion webhooks"): where its delivery stands."""

    event_id: str = Field(description="Sent as `Provisioner-Event-Id` and the body's `id`.")
    type: EventType
    status: Literal["pending", "delivered", "failed"] = Field(
        description="`pending`: to be sent (again); `failed`: every attempt failed."
    )
    attempts: int = Field(description="POSTs so far.")
    last_status: int | None = Field(description="The receiver's HTTP status at the last attempt.")
    last_error: str | None = Field(description="Why the last attempt failed, if it did.")
    next_attempt_at: Timestamp | None = Field(description="While pending: the next attempt.")
    created_at: Timestamp
    delivered_at: Timestamp | None


class Job(Model):
    """One job (``worker.jobs.view.job_view``)."""

    id: str
    idempotency_key: str
    operation: Operation
    status: JobStatus
    done: bool = Field(description="True once the status is final: succeeded, failed, cancelled.")
    domain: str = Field(description="As Plausible normalised it once the site exists.")
    adopted: bool | None = Field(
        description="The domain was taken, by a site that turned out to be ours."
    )
    existed: bool | None = Field(
        description="Adopted, and in the account before this job: no create of the job made it."
    )
    batch_id: str | None
    goals: list[Goal]
    shared_links: list[SharedLink]
    deleted: bool | None
    attempts: int
    error: JobError | None = Field(
        description="The last error; a queued job with `quota_wait` or `rate_limited` waits for "
        "the scheduler."
    )
    next_attempt_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    finished_at: Timestamp | None
    webhook: WebhookDelivery | None = Field(
        default=None,
        description="The completion webhook, once the job is done and has a URL; else null.",
    )


class JobPage(Model):
    jobs: list[Job]
    next_cursor: str | None = Field(
        description="Pass back as `cursor` for the next page; null on the last page."
    )


class WebhookEvent(Model):
    """The body of a completion webhook (README, "Completion webhooks"): the job as it was when
    it finished, without its ``webhook`` field. Receivers may parse a body with
    ``WebhookEvent.model_validate_json`` once its signature checks out."""

    id: str = Field(description="The same on every attempt (`Provisioner-Event-Id`).")
    type: EventType
    created: Timestamp
    job: Job

    def document(self) -> dict[str, Any]:
        """The body as JSON-ready values, in the order sent."""
        return self.model_dump(mode="json", exclude={"job": {"webhook"}})
