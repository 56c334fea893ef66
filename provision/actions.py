"""What an operator does to jobs, whichever door they come in by (the CLI, the HTTP service, the
dashboard): retry failed jobs, cancel jobs that have not run; one job or every job a filter
matches. One wording for each refusal."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker import pauses
from worker.errors import ProvisionerError
from worker.jobs.filters import JobFilter
from worker.jobs.models import ProvisioningJob
from worker.jobs.states import CANCELLABLE, JobStatus
from worker.jobs.store import JobStore

#: Which statuses each action applies to, and what it makes of a job.
APPLIES_TO = {"retry": (JobStatus.failed,), "cancel": CANCELLABLE}
DONE = {"retry": "queued again", "cancel": "cancelled"}


class JobNotFoundError(ProvisionerError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no job {ref!r}")
        self.ref = ref


class WrongStatusError(ProvisionerError):
    """The job is in a status the action does not apply to."""

    def __init__(self, job: ProvisioningJob, action: str) -> None:
        allowed = " or ".join(s.value for s in APPLIES_TO[action])
        super().__init__(
            f"job {job.id} is {job.status.value}; only a {allowed} job can be "
            f"{'retried' if action == 'retry' else 'cancelled'}"
        )
        self.job = job


@dataclass(frozen=True)
class Changed:
    """The jobs an action changed, and the paused accounts a retry resumed."""

    ids: list[str]
    resumed: list[str] = field(default_factory=list)


def act_on_job(store: JobStore, action: str, ref: str) -> ProvisioningJob:
    """Retry or cancel one job, by id or idempotency key; the job as it is now. Raises
    JobNotFoundError or WrongStatusError."""
    job = store.find(ref)
    if job is None:
        raise JobNotFoundError(ref)
    done = store.retry(job.id) if action == "retry" else store.cancel(job.id)
    now = store.get(job.id)
    if now is None:
        raise JobNotFoundError(ref)
    if not done:
        raise WrongStatusError(now, action)
    return now


def act_on_matching(store: JobStore, action: str, where: JobFilter) -> Changed:
    """Retry or cancel every job ``where`` matches (give a filter with a field: an empty one
    matches every job). A retry resumes the paused accounts that hold any of them."""
    if action == "retry":
        retried = pauses.retry_matching(store, where)
        return Changed(retried.ids, retried.resumed)
    return Changed(store.cancel_matching(where))


def count_matching(store: JobStore, action: str, where: JobFilter) -> int:
    """How many jobs ``where`` matches that ``action`` would change now."""
    return store.count(where, APPLIES_TO[action])
