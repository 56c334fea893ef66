"""The outbox of completion webhooks: rows written with a job's final status, claimed and sent by
any worker (``worker.webhooks``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, update
from sqlmodel import Session, col, select

from worker.jobs.models import ProvisioningJob, WebhookDelivery
from worker.jobs.states import DEFAULT_ACCOUNT, DeliveryStatus
from worker.jobs.table import Table


@dataclass(frozen=True)
class DeliveryClaim:
    """A worker's hold on a webhook delivery it is sending (``worker.webhooks``)."""

    event_id: str
    job_id: str
    token: str
    url: str
    body: str
    #: This attempt's number (1 for the first).
    attempts: int
    #: The job's account, whose secret signs the delivery.
    account: str = DEFAULT_ACCOUNT


class Outbox(Table):
    """What the webhook sender may do: claim a due delivery, record its outcome."""

    def claim_delivery(self, *, lease_seconds: float, max_attempts: int) -> DeliveryClaim | None:
        """Take the longest-due webhook that no live lease holds, for one attempt (counted now);
        None if there is none. A delivery whose worker died during its last allowed attempt is
        failed instead of sent again."""
        w = WebhookDelivery
        now = self.clock()
        due = (
            col(w.status) == DeliveryStatus.pending,
            col(w.next_attempt_at) <= now,
            or_(col(w.lease_expires_at).is_(None), col(w.lease_expires_at) < now),
        )
        with Session(self.engine) as session:  # read, then write in separate transactions
            candidates = session.execute(
                select(w.event_id, w.attempts, ProvisioningJob.account)
                .outerjoin(ProvisioningJob, col(ProvisioningJob.id) == col(w.job_id))
                .where(*due)
                .order_by(col(w.next_attempt_at))
                .limit(10)
            ).all()
        for event_id, attempts, account in candidates:
            unchanged = (col(w.event_id) == event_id, col(w.attempts) == attempts, *due)
            if attempts >= max_attempts:
                self._update_delivery(
                    *unchanged,
                    status=DeliveryStatus.failed,
                    last_status=None,
                    last_error=f"attempt {attempts}: the sending worker stopped before an answer",
                    lease_token=None,
                    lease_expires_at=None,
                )
                continue
            token = uuid.uuid4().hex
            with Session(self.engine) as session:
                row = session.execute(
                    update(w)
                    .where(*unchanged)
                    .values(
                        lease_token=token,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                        attempts=w.attempts + 1,
                    )
                    .returning(col(w.job_id), col(w.url), col(w.body), col(w.attempts))
                ).first()
                session.commit()
            if row is not None:
                job_id, url, body, attempt = row
                return DeliveryClaim(
                    event_id, job_id, token, url, body, attempt, account or DEFAULT_ACCOUNT
                )
        return None

    def finish_delivery(
        self,
        claim: DeliveryClaim,
        *,
        status: DeliveryStatus,
        last_status: int | None,
        last_error: str | None,
        retry_in: float | None = None,
    ) -> bool:
        """Record an attempt's outcome and release the claim; ``retry_in`` seconds until the
        next attempt (pending). False if the lease was taken over meanwhile (nothing written)."""
        w = WebhookDelivery
        now = self.clock()
        values: dict[str, Any] = {
            "status": status,
            "last_status": last_status,
            "last_error": last_error,
            "lease_token": None,
            "lease_expires_at": None,
        }
        if status is DeliveryStatus.delivered:
            values["delivered_at"] = now
        if retry_in is not None:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in)
        fenced = (col(w.event_id) == claim.event_id, col(w.lease_token) == claim.token)
        return self._update_delivery(*fenced, **values) == 1

    def deliveries(self, job_id: str) -> list[WebhookDelivery]:
        """The job's webhooks, oldest first."""
        w = WebhookDelivery
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.exec(
                    select(w)
                    .where(col(w.job_id) == job_id)
                    .order_by(col(w.created_at), col(w.event_id))
                ).all()
            )

    def pending_deliveries(self) -> int:
        """How many webhooks wait to be sent."""
        w = WebhookDelivery
        with Session(self.engine) as session:
            return int(
                session.execute(
                    select(func.count()).where(col(w.status) == DeliveryStatus.pending)
                ).scalar()
                or 0
            )

    def _update_delivery(self, *conditions: Any, **values: Any) -> int:
        with Session(self.engine) as session:
            result = session.execute(update(WebhookDelivery).where(*conditions).values(**values))
            session.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]
