"""Claims and checkpoints: a worker's hold on a running job, under a lease token.

``claim`` turns a queued, due or abandoned job into a running one under a fresh lease token; a
duplicate or redelivered message for a job someone else holds finds nothing to claim. Every later
write (``checkpoint``, ``renew``, ``succeed``, ``fail``, ``park``, ``requeue``) applies only while
the caller still holds that token (fencing), so a worker whose lease was taken over can never
overwrite newer state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_
from sqlmodel import Session, col, select

from worker.jobs.inventory import changes
from worker.jobs.models import ProvisioningJob, SiteGoalRow
from worker.jobs.specs import JobRequest, Progress, calls_needed
from worker.jobs.states import JobStatus, Priority
from worker.jobs.table import Change, Table


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a running job."""

    job_id: str
    token: str
    attempts: int
    request: JobRequest
    progress: Progress
    priority: Priority = Priority.interactive
    #: Quota permits reserved for the job when it was dispatched (window key -> permits).
    permits: dict[str, int] = field(default_factory=dict)
    idempotency_key: str | None = None


class Claims(Table):
    """What the pipeline and the lease keeper may do: claim, checkpoint, renew, and end a run."""

    def claim(self, job_id: str, *, lease_seconds: float, owner: str | None = None) -> Claim | None:
        """Take the job if it is queued, due, or abandoned by an expired lease; else None.
        ``owner`` names the claiming process (``worker.leases.process_id``)."""
        now = self.clock()
        token = uuid.uuid4().hex
        t = ProvisioningJob
        claimable = or_(
            col(t.status) == JobStatus.queued,
            and_(col(t.status) == JobStatus.waiting, col(t.next_attempt_at) <= now),
            and_(col(t.status) == JobStatus.running, col(t.lease_expires_at) < now),
        )
        changed = self._update(
            col(t.id) == job_id,
            claimable,
            status=JobStatus.running,
            lease_token=token,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            lease_owner=owner,
            attempts=t.attempts + 1,
            next_attempt_at=None,
            started_at=func.coalesce(t.started_at, now),
            updated_at=now,
        )
        job = self.get(job_id) if changed == 1 else None
        if job is None:
            return None
        return Claim(
            job.id,
            token,
            job.attempts,
            job.spec,
            job.progress,
            Priority(job.priority),
            dict(job.permits or {}),
            job.idempotency_key,
        )

    def checkpoint(self, claim: Claim, progress: Progress, *, lease_seconds: float) -> None:
        """Record finished steps, so a later attempt resumes after them, and what they made in
        the inventory; renews the lease."""
        self._apply(claim, progress=progress, lease_expires_at=self._lease_end(lease_seconds))

    def renew(self, claim: Claim, *, lease_seconds: float) -> None:
        """Extend a live claim; raises LeaseLostError if it was already taken over."""
        self._apply(claim, lease_expires_at=self._lease_end(lease_seconds))

    def _lease_end(self, lease_seconds: float) -> datetime:
        return self.clock() + timedelta(seconds=lease_seconds)

    def succeed(self, claim: Claim, progress: Progress) -> None:
        self._release(claim, JobStatus.succeeded, progress, finished_at=self.clock())

    def fail(
        self,
        claim: Claim,
        *,
        code: str,
        message: str,
        http_status: int | None,
        progress: Progress,
    ) -> None:
        self._release(
            claim,
            JobStatus.failed,
            progress,
            (code, message, http_status),
            finished_at=self.clock(),
        )

    def park(
        self,
        claim: Claim,
        *,
        until: datetime,
        code: str,
        message: str,
        http_status: int | None,
        progress: Progress,
    ) -> None:
        """Release the job until ``until`` (a transient failure); the sweeper re-drives it then."""
        self._release(
            claim,
            JobStatus.waiting,
            progress,
            (code, message, http_status),
            next_attempt_at=until,
            dispatched_at=None,
        )

    def requeue(
        self, claim: Claim, *, code: str, message: str, http_status: int | None, progress: Progress
    ) -> None:
        """Hand the job back to the scheduler at its checkpoint: the quota has no room for its
        next call. Waiting for quota does not count as an attempt."""
        self._release(
            claim,
            JobStatus.queued,
            progress,
            (code, message, http_status),
            attempts=ProvisioningJob.attempts - 1,
            next_attempt_at=None,
            dispatched_at=None,
        )

    def _release(
        self,
        claim: Claim,
        status: JobStatus,
        progress: Progress,
        error: tuple[str, str, int | None] | None = None,
        **values: Any,
    ) -> None:
        """End the claim: the job's new status, its progress and last error, lease cleared. A
        final status with a webhook URL writes its outbox row in the same transaction."""
        code, message, http_status = error or (None, None, None)
        url = self.webhook_url(claim.request.callback_url, claim.request.account)
        apply = self._apply_notifying if status.done and url else self._apply
        apply(
            claim,
            status=status,
            progress=progress,
            error_code=code,
            error_message=message,
            error_status=http_status,
            lease_token=None,
            lease_expires_at=None,
            permits=None,
            **values,
        )

    def _apply(self, claim: Claim, **values: Any) -> None:
        self._update_fenced(claim, self._recorded(claim, values), **values)

    def _apply_notifying(self, claim: Claim, **values: Any) -> None:
        """``_apply`` of a final status, and the job's webhook in the outbox: one transaction."""
        also = self._recorded(claim, values)
        self._finish(col(ProvisioningJob.id) == claim.job_id, fence=claim, also=also, **values)

    def _recorded(self, claim: Claim, values: dict[str, Any]) -> list[Change]:
        """With a new ``progress`` among ``values``: the calls the job still needs beside it, and
        what it changes in the inventory (written in the same transaction)."""
        values.setdefault("updated_at", self.clock())
        progress = values.get("progress")
        if progress is None:
            return []
        values["calls_left"] = calls_needed(claim.request, progress)
        dialect = self.engine.dialect.name
        now = values["updated_at"]
        return changes(dialect, claim.request, claim.job_id, claim.progress, progress, now)

    def goal_id_from_history(self, domain: str, natural_key: str) -> int | None:
        """The id our records (the inventory) hold for a goal of ``domain``, if any."""
        g = SiteGoalRow
        with Session(self.engine) as session:
            return session.execute(
                select(g.goal_id)
                .where(col(g.domain) == domain, col(g.natural_key) == natural_key)
                .order_by(col(g.confirmed_at).desc())
                .limit(1)
            ).scalar()
