"""The HTTP service's request and response models, for its OpenAPI document.

Responses mirror the dicts ``worker.jobs.view`` builds (``job_view``, ``batch_view``) and
``Reporter.quotas()`` returns, field for field: the views stay the one place that builds them, and
the service returns them through these models. Timestamps are the views' ISO 8601 strings (UTC),
kept as strings so the models do not re-format them.

``SignupEvent`` documents ``POST /jobs``'s body only: the body is validated by
``producers.events.parse_event``, whose errors name the field at fault.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.jobs.states import JobStatus, Operation, Priority

#: An ISO 8601 timestamp in UTC, e.g. ``2025-01-31T12:00:00.123456+00:00``.
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


# -- errors ------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: `not_found`, `wrong_status`, …")
    message: str = Field(description="For people; may change between versions.")
    field: str | None = Field(
        description="The field, parameter or header at fault (`goals[1].display_name`), if any."
    )


class ErrorBody(BaseModel):
    """Every error the service answers, whatever its status."""

    error: ErrorDetail


# -- jobs --------------------------------------------------------------------------------------


class JobError(BaseModel):
    code: str
    message: str | None
    http_status: int | None = Field(description="Plausible's HTTP status, when it answered one.")


class Goal(BaseModel):
    """A goal as Plausible holds it (``worker.jobs.specs.GoalRecord``)."""

    id: int
    goal_type: str
    event_name: str | None = None
    page_path: str | None = None
    display_name: str


class SharedLink(BaseModel):
    name: str
    url: str


class WebhookDelivery(BaseModel):
    """A job's completion webhook (README, "Completion webhooks"): where its delivery stands."""

    event_id: str = Field(description="Sent as `Provisioner-Event-Id` and the body's `id`.")
    type: Literal["job.succeeded", "job.failed", "job.cancelled"]
    status: Literal["pending", "delivered", "failed"] = Field(
        description="`pending`: to be sent (again); `failed`: every attempt failed."
    )
    attempts: int = Field(description="POSTs so far.")
    last_status: int | None = Field(description="The receiver's HTTP status at the last attempt.")
    last_error: str | None = Field(description="Why the last attempt failed, if it did.")
    next_attempt_at: Timestamp | None = Field(description="While pending: the next attempt.")
    created_at: Timestamp
    delivered_at: Timestamp | None


class Job(BaseModel):
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


class JobPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = Field(
        description="Pass back as `cursor` for the next page; null on the last page."
    )


class FailureError(BaseModel):
    code: str | None
    message: str | None


class Failure(BaseModel):
    id: str
    idempotency_key: str
    domain: str
    error: FailureError


class Batch(BaseModel):
    """A batch (``worker.jobs.view.batch_view``)."""

    batch_id: str
    total: int
    done: bool
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


# -- quota -------------------------------------------------------------------------------------


class AccountPause(BaseModel):
    code: str = Field(description="invalid_api_key, sites_api_unavailable or site_limit_reached.")
    message: str
    scope: str = Field(description="`all` jobs, or `provision`: only new sites wait.")


class QuotaAccount(BaseModel):
    name: str
    waiting: dict[str, int] = Field(description="Its queued jobs waiting, by priority class.")
    paused: AccountPause | None = Field(
        description="Set while an account-level error holds its jobs (see README, Accounts)."
    )


class QuotaWindow(BaseModel):
    kind: str = Field(description="`hour` or `burst`.")
    seconds: float
    used: int
    limit: int
    remaining: int
    interactive_reserve: int
    spent: bool = Field(description="Plausible answered 429 in this window: nothing more goes out.")
    resets_at: Timestamp


class Quota(BaseModel):
    """One quota (``Reporter.quotas()``)."""

    quota: str
    accounts: list[QuotaAccount]
    windows: list[QuotaWindow]
    waiting: dict[str, int] = Field(description="Queued jobs waiting, by priority class.")


# -- operations --------------------------------------------------------------------------------


class JobFilterBody(BaseModel):
    """Which jobs a bulk retry or cancel means: every given field must match. At least one is
    required; an unknown field is refused rather than ignored (it would widen the match)."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    batch_id: str | None = None
    domain: str | None = Field(default=None, description="Normalised like an event's domain.")
    account: str | None = None
    code: str | None = Field(default=None, description="The last error's code: `domain_taken`.")


#: ``Changed.ids`` lists at most this many.
MAX_CHANGED_IDS = 1000


class Changed(BaseModel):
    changed: int = Field(description="How many jobs changed.")
    ids: list[str] = Field(description=f"The first {MAX_CHANGED_IDS} of their ids.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


# -- the body of POST /jobs (documentation only) -----------------------------------------------


class SignupGoal(BaseModel):
    goal_type: Literal["event", "page"]
    event_name: str | None = Field(
        default=None, description="Event goals: at most 120 characters, not `engagement`."
    )
    page_path: str | None = Field(default=None, description="Page goals: `/pricing/*`.")
    display_name: str | None = Field(
        default=None,
        description="Unique per site; defaults to the event name or `Visit <page_path>`.",
    )
    custom_props: dict[str, str] | None = None


class SignupEvent(BaseModel):
    """A signup event (README, "Signup events"). Every string must be valid Unicode without NUL
    characters; an event nests at most 8 levels."""

    id: str | int | None = Field(
        default=None,
        description='The idempotency key (trimmed, at most 255 characters; 42 and "42" are one '
        "key); without one it is derived from the request. Or the `Idempotency-Key` header.",
    )
    type: Literal["site.provision", "site.delete", "goal.delete"] = "site.provision"
    domain: str = Field(description="Normalised as Plausible does.")
    timezone: str | None = Field(default=None, description="IANA name; `Etc/UTC` if omitted.")
    goals: list[SignupGoal] | None = None
    shared_links: list[str] | None = Field(default=None, description="Shared-link names.")
    goal_id: int | None = Field(default=None, ge=1, description="`goal.delete`: the goal's id.")
    event_name: str | None = Field(default=None, description="`goal.delete`: by event name.")
    page_path: str | None = Field(default=None, description="`goal.delete`: by page path.")
    callback_url: str | None = Field(
        default=None,
        description="Completion webhook: POSTed the job once it is done (http/https).",
    )
    account: str | None = Field(default=None, description="`default` if omitted.")
    priority: Priority | None = Field(
        default=None, description="`interactive` if omitted (HTTP requests are interactive)."
    )


SIGNUP_EVENT_EXAMPLE: dict[str, Any] = {
    "id": "evt_123",
    "type": "site.provision",
    "domain": "shop.example.com",
    "timezone": "Europe/Berlin",
    "goals": [
        {"goal_type": "event", "event_name": "Signup"},
        {"goal_type": "page", "page_path": "/pricing/*"},
    ],
    "shared_links": ["WordPress"],
}
