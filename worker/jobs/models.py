"""The status database's tables: jobs, their completion webhooks, quota windows and account pauses.

One row per job. The row is the source of truth: the broker only carries job ids, so losing the
broker loses no job, and every outcome (goal ids, shared-link URLs, errors) is read from here.
The schema is owned by the migrations in ``worker/jobs/migrations``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, String, Text, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, relationship
from sqlalchemy.types import TypeDecorator
from sqlmodel import Column, Field, Relationship, SQLModel

from worker.jobs.specs import JobRequest, Progress
from worker.jobs.states import DEFAULT_ACCOUNT, DeliveryStatus, JobStatus, Operation, Priority
from worker.times import utcnow


class ProgressJSON(TypeDecorator[Progress]):
    """A ``Progress`` in a JSON column."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        progress = value if isinstance(value, Progress) else Progress.model_validate(value)
        return progress.model_dump(mode="json", exclude_defaults=True)

    def process_result_value(self, value: Any, dialect: Dialect) -> Progress:
        return Progress.model_validate(value or {})


class ProvisioningJob(SQLModel, table=True):
    __tablename__ = "provisioning_jobs"
    __table_args__ = (
        Index("ix_provisioning_jobs_status_next", "status", "next_attempt_at"),
        # The scheduler's queries: queued jobs by class in arrival order, and per batch.
        Index("ix_provisioning_jobs_admission", "status", "priority", "created_at"),
        Index(
            "ix_provisioning_jobs_admission_batch", "status", "priority", "batch_id", "created_at"
        ),
        # The jobs that finished last (how long jobs take, for the reserve's release), and the
        # finished jobs retention deletes.
        Index("ix_provisioning_jobs_status_finished", "status", "finished_at"),
        # A batch's failures, oldest first, and its jobs finished lately (its rate).
        Index("ix_provisioning_jobs_batch_status", "batch_id", "status", "created_at"),
        Index("ix_provisioning_jobs_batch_finished", "batch_id", "finished_at"),
    )

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True, max_length=32)
    idempotency_key: str = Field(unique=True, index=True, max_length=255)
    operation: Operation
    domain: str = Field(index=True, max_length=255)
    batch_id: str | None = Field(default=None, index=True, max_length=64)
    request: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    #: sha256 of the canonical request, to tell a retry from a reuse of the key.
    fingerprint: str = Field(max_length=64)

    account: str = Field(default=DEFAULT_ACCOUNT, max_length=64, index=True)
    priority: Priority = Field(default=Priority.interactive, sa_type=String(16))

    status: JobStatus = Field(default=JobStatus.queued, index=True)
    progress: Progress = Field(
        default_factory=Progress, sa_column=Column(ProgressJSON, nullable=False)
    )
    attempts: int = 0
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = None
    error_status: int | None = None

    next_attempt_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    #: The current claim: a running job belongs to whoever holds this token until the lease ends.
    lease_token: str | None = Field(default=None, max_length=32)
    lease_expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    #: The process that took the claim (``worker.leases.process_id``): a sweeper on the same
    #: host hands the job back as soon as that process is gone.
    lease_owner: str | None = Field(default=None, max_length=128)
    #: When the job's message was last handed to the broker; None means not yet (outbox).
    dispatched_at: datetime | None = Field(
        default=None, sa_type=DateTime(timezone=True), index=True
    )
    dispatch_count: int = 0
    #: The calls the job still needs on the happy path (``worker.quota.permits.calls_needed``),
    #: kept with its checkpoints: the counts sum it to tell when a batch will be done.
    calls_left: int = 1
    #: Quota permits the scheduler reserved for the job when it dispatched it: window key
    #: ("burst:177000123") -> permits. The worker spends these before taking any more.
    permits: dict[str, int] | None = Field(default=None, sa_column=Column(JSON, nullable=True))

    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    started_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))

    #: The job's completion webhooks, oldest first (one per final status it reached; a failed
    #: job retried and done again has two). Loaded with the job, read-only.
    webhooks: Mapped[list[WebhookDelivery]] = Relationship(
        sa_relationship=relationship(
            "WebhookDelivery",
            primaryjoin="ProvisioningJob.id == foreign(WebhookDelivery.job_id)",
            order_by="(WebhookDelivery.created_at, WebhookDelivery.event_id)",
            lazy="selectin",
            viewonly=True,
        )
    )

    @property
    def spec(self) -> JobRequest:
        return JobRequest.model_validate(self.request)

    @property
    def webhook(self) -> WebhookDelivery | None:
        """The latest completion webhook, if the job has one."""
        return self.webhooks[-1] if self.webhooks else None


class QuotaWindowRow(SQLModel, table=True):
    """Permits taken in one of a quota's windows, shared by every process on every host.

    Plausible counts requests in fixed windows (``floor(now / length)``): a team's hour and its
    burst window. A row per quota, kind and window index; a permit is taken before a request is
    sent, so ``used`` never exceeds the limit. ``spent`` marks a window in which Plausible
    answered 429 anyway (someone else shares the quota): nothing more goes out in it.
    """

    __tablename__ = "quota_windows"

    quota: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=8)
    window: int = Field(primary_key=True, sa_type=BigInteger)
    used: int = 0
    spent: bool = False
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class AccountPauseRow(SQLModel, table=True):
    """An account whose jobs wait because every call of theirs would fail: a key Plausible
    refuses, a plan without the Sites API, the site limit reached (which pauses only new
    sites), or no Sites API at PLAUSIBLE_BASE_URL. Resumed when the account's key changes or an
    operator retries its jobs."""

    __tablename__ = "account_pauses"

    account: str = Field(primary_key=True, max_length=64)
    code: str = Field(max_length=64)
    message: str
    #: ``all`` jobs, or ``provision`` (provision_site jobs only).
    scope: str = Field(max_length=16)
    #: A hash of the key that was refused (never the key): a different key resumes the account.
    key_fingerprint: str | None = Field(default=None, max_length=64)
    paused_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class WebhookDelivery(SQLModel, table=True):
    """The outbox of completion webhooks: one row per event, written in the transaction that
    gives its job a final status, so no crash can lose it. Workers claim due rows with a lease
    (``worker.webhooks``); the body is the snapshot taken then, so every attempt sends the same
    bytes under the same event id."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True, max_length=32)
    job_id: str = Field(index=True, max_length=32)
    #: ``job.succeeded``, ``job.failed`` or ``job.cancelled``.
    type: str = Field(max_length=32)
    url: str = Field(max_length=2048)
    #: The JSON sent, exactly as sent.
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: DeliveryStatus = Field(default=DeliveryStatus.pending, sa_type=String(16))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    #: The current claim: the worker sending it holds this token until the lease ends.
    lease_token: str | None = Field(default=None, max_length=32)
    lease_expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    #: The receiver's HTTP status at the last attempt (None: no answer).
    last_status: int | None = None
    #: Why the last attempt failed, in one line (never a secret, never the URL's query).
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    delivered_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Batch(SQLModel, table=True):
    """A group of jobs an operator thinks of as one: an imported file, a plan applied, or, for
    jobs that came one at a time (HTTP, the Python API, the stream), their source's day.

    Its counts live in ``job_counts``; the row itself only says what it is and when it began and
    last finished something, so a batch's page still works once its jobs are pruned."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_created", "created_at", "id"),)

    id: str = Field(primary_key=True, max_length=64)
    #: For people: the file's name, a label the producer gave, or the source and day.
    name: str = Field(max_length=255)
    #: ``import``, ``http``, ``api``, ``stream``, ``apply``, ``legacy``...
    source: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    #: When a job of the batch last reached a final status (kept in step by the database).
    last_finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class JobCount(SQLModel, table=True):
    """How many jobs are in each state, per batch, account, class and last error code, and the
    calls they still need: kept by database triggers in the transaction of every change to a
    job, so every reader gets exact numbers without counting the backlog. Rows are never
    decremented by retention: a batch keeps its counts after its jobs are pruned.

    ``state`` is the job's status, with ``queued`` split in two: ``ready`` (waiting for the
    scheduler) and ``dispatched`` (handed to the broker, not started)."""

    __tablename__ = "job_counts"
    __table_args__ = (
        # Only the counts that hold jobs: a batch long done leaves rows of zero behind.
        Index(
            "ix_job_counts_open",
            "state",
            "priority",
            "account",
            "batch_id",
            postgresql_where=text("jobs > 0"),
            sqlite_where=text("jobs > 0"),
        ),
    )

    batch_id: str = Field(primary_key=True, max_length=64)
    account: str = Field(primary_key=True, max_length=64)
    priority: str = Field(primary_key=True, max_length=16)
    state: str = Field(primary_key=True, max_length=16)
    #: The last error's code ('' for none).
    code: str = Field(primary_key=True, max_length=64)
    jobs: int = Field(default=0, sa_type=BigInteger)
    calls: int = Field(default=0, sa_type=BigInteger)


class SiteRow(SQLModel, table=True):
    """The inventory: a site the provisioner knows it owns in Plausible, per account. Written in
    the transaction of the checkpoint that learnt it; removed by the delete that removed it."""

    __tablename__ = "inventory_sites"

    account: str = Field(primary_key=True, max_length=64)
    #: As Plausible normalised it: its ``site_id``.
    domain: str = Field(primary_key=True, max_length=255)
    timezone: str = Field(max_length=64)
    #: ``created`` by us, ``adopted`` (the domain was taken, by a site of ours: a create whose
    #: answer was lost), or ``existed`` (in the account before us).
    origin: str = Field(max_length=16)
    job_id: str = Field(max_length=32)
    #: The desired-state set whose job created it (``provision apply``); None: not a set's.
    managed_set: str | None = Field(default=None, max_length=64)
    #: Its tracker script configuration as Plausible last answered a job of ours that set it
    #: (``set_tracker``, or a create that carried it); None: never set by us.
    tracker: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    #: When a job last saw it in Plausible.
    confirmed_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class SiteGoalRow(SQLModel, table=True):
    """A goal of an inventory site, by its natural key (``event:Signup``, ``page:/pricing``)."""

    __tablename__ = "inventory_goals"

    account: str = Field(primary_key=True, max_length=64)
    domain: str = Field(primary_key=True, max_length=255)
    natural_key: str = Field(primary_key=True, max_length=255)
    goal_id: int = Field(sa_type=BigInteger)
    goal_type: str = Field(max_length=8)
    event_name: str | None = Field(default=None, max_length=255)
    page_path: str | None = Field(default=None, max_length=2048)
    display_name: str = Field(max_length=255)
    #: Its custom properties as Plausible answered the job that ensured it (``{}``: none, and
    #: every goal recorded before migration 0011).
    custom_props: dict[str, str] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False, server_default=text("'{}'")),
    )
    job_id: str = Field(max_length=32)
    #: The desired-state set whose job first recorded it; None: not a set's.
    managed_set: str | None = Field(default=None, max_length=64)
    confirmed_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class SiteLinkRow(SQLModel, table=True):
    """A shared link of an inventory site (Plausible can only ensure them: none is deleted)."""

    __tablename__ = "inventory_links"

    account: str = Field(primary_key=True, max_length=64)
    domain: str = Field(primary_key=True, max_length=255)
    name: str = Field(primary_key=True, max_length=255)
    url: str = Field(max_length=2048)
    job_id: str = Field(max_length=32)
    confirmed_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class SitePropRow(SQLModel, table=True):
    """A custom property an inventory site allows."""

    __tablename__ = "inventory_props"

    account: str = Field(primary_key=True, max_length=64)
    domain: str = Field(primary_key=True, max_length=255)
    name: str = Field(primary_key=True, max_length=300)
    job_id: str = Field(max_length=32)
    #: The desired-state set whose job first recorded it; None: not a set's.
    managed_set: str | None = Field(default=None, max_length=64)
    confirmed_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class SiteGuestRow(SQLModel, table=True):
    """A guest (or pending invitation) of an inventory site, with the role Plausible holds."""

    __tablename__ = "inventory_guests"

    account: str = Field(primary_key=True, max_length=64)
    domain: str = Field(primary_key=True, max_length=255)
    email: str = Field(primary_key=True, max_length=254)
    role: str = Field(max_length=16)
    job_id: str = Field(max_length=32)
    #: The desired-state set whose job first recorded it; None: not a set's.
    managed_set: str | None = Field(default=None, max_length=64)
    confirmed_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class PlanRow(SQLModel, table=True):
    """A desired-state plan, kept when it is made and marked when first applied: its batch, set,
    summary, calls, changes and cost (``producers.plans``), readable before it is applied and
    shown on the dashboard beside its progress."""

    __tablename__ = "plans"

    #: The plan's batch: one per plan.
    batch_id: str = Field(primary_key=True, max_length=64)
    set: str = Field(max_length=64)
    account: str = Field(max_length=64, index=True)
    identity: str = Field(max_length=64)
    summary: str = Field(max_length=1000)
    calls: int
    changes: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    #: Its cost as priced when it was made (``Cost.as_json``); None: not priced.
    cost: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    made_at: datetime = Field(sa_type=DateTime(timezone=True))
    #: None: made, not applied yet.
    applied_at: datetime | None = Field(
        default=None, sa_type=DateTime(timezone=True), index=True, nullable=True
    )

    @property
    def status(self) -> str:
        return "planned" if self.applied_at is None else "applied"


class AuditEvent(SQLModel, table=True):
    """Who did what to which jobs, and when: every operator action (retry, cancel, by job or by
    filter; pause and resume; apply) and every dashboard sign-in. Kept beyond job retention."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at", "id"),)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True, max_length=32)
    at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    #: A token's name (``api-token`` for ``PROVISIONER_API_TOKEN``), or ``cli:user@host``.
    actor: str = Field(max_length=128)
    #: ``retry``, ``cancel``, ``resume``, ``sign-in``, ``sign-in-refused``, ``sign-out``,
    #: ``session-revoked``, ``apply``...
    action: str = Field(max_length=32)
    #: A job id, an account, a session; or ``filter`` (then ``filter`` holds it).
    target: str | None = Field(default=None, max_length=255)
    filter: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    #: How many jobs the action changed.
    count: int = 0
    #: Where it came from (``http``, ``dashboard``, ``cli``) and anything else worth a line.
    detail: str | None = Field(default=None, max_length=500)


class DashboardSession(SQLModel, table=True):
    """A dashboard sign-in, recorded so it can be listed and revoked one by one. The cookie holds
    the session's id (signed); the token itself is never stored, only its name."""

    __tablename__ = "dashboard_sessions"

    id: str = Field(primary_key=True, max_length=64)
    token_name: str = Field(max_length=64, index=True)
    client: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class SigninFailures(SQLModel, table=True):
    """Refused dashboard sign-ins, counted per client and per token tried, in fixed windows:
    the throttle every ``provision serve`` process shares."""

    __tablename__ = "signin_failures"

    key: str = Field(primary_key=True, max_length=128)
    window: int = Field(primary_key=True, sa_type=BigInteger)
    failures: int = 0


class WorkerProcessRow(SQLModel, table=True):
    """A process that runs jobs, while it lives: it writes a heartbeat every second or so
    (``worker.registry``). Its id is what its claims record as their ``lease_owner``."""

    __tablename__ = "worker_processes"

    id: str = Field(primary_key=True, max_length=128)
    #: The host's name and the process's id there, for people (``provision workers``).
    host: str = Field(max_length=255)
    pid: int
    started: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    #: By the process's own clock; shown, never compared across hosts (``beats`` is).
    last_heartbeat: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    #: Bumped at every heartbeat: a watcher takes a process for dead when this stops changing
    #: for long enough by the watcher's own clock, so clocks that differ between hosts do not
    #: matter.
    beats: int = Field(default=0, sa_type=BigInteger)
