"""Operator actions: retry failed jobs, cancel jobs that have not run; one job or every job a filter
matches. Each is one conditional UPDATE, so a job in another status is left alone."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from worker.jobs.filters import JobFilter
from worker.jobs.models import ProvisioningJob
from worker.jobs.states import CANCELLABLE, JobStatus
from worker.jobs.table import Table


class Actions(Table):
    """What operators may do to jobs."""

    def cancel(self, job_id: str) -> bool:
        """Withdraw a queued or waiting job; False if it is in any other status (or unknown)."""
        return len(self._cancel(col(ProvisioningJob.id) == job_id)) == 1

    def retry(self, job_id: str) -> bool:
        """Queue a failed job again from its last checkpoint, with a fresh attempt budget, for the
        scheduler to dispatch. False unless it was failed."""
        return len(self._retry(col(ProvisioningJob.id) == job_id)) == 1

    def cancel_matching(self, where: JobFilter) -> list[str]:
        """Withdraw every queued or waiting job ``where`` matches; returns their ids."""
        return self._cancel(*where.conditions())

    def retry_ids(self, job_ids: Sequence[str]) -> list[str]:
        """Queue again those of ``job_ids`` that failed; returns their ids."""
        return self._retry(col(ProvisioningJob.id).in_(list(job_ids))) if job_ids else []

    def retry_matching(self, where: JobFilter) -> list[str]:
        """Queue again every failed job ``where`` matches; returns their ids."""
        return self._retry(*where.conditions())

    def _cancel(self, *conditions: ColumnElement[bool]) -> list[str]:
        now = self.clock()
        t = ProvisioningJob
        return self._finish(
            *conditions,
            col(t.status).in_(CANCELLABLE),
            status=JobStatus.cancelled,
            next_attempt_at=None,
            lease_token=None,
            lease_expires_at=None,
            # Permits reserved for it stay counted in their window (a few calls at most).
            permits=None,
            finished_at=now,
            updated_at=now,
        )

    def _retry(self, *conditions: ColumnElement[bool]) -> list[str]:
        t = ProvisioningJob
        retried = self._update_returning(
            *conditions,
            col(t.status) == JobStatus.failed,
            status=JobStatus.queued,
            attempts=0,
            error_code=None,
            error_message=None,
            error_status=None,
            next_attempt_at=None,
            finished_at=None,
            dispatched_at=None,
            updated_at=self.clock(),
        )
        if retried:
            self.announce()
        return retried
