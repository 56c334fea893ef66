"""What an operator does to jobs, whichever door they come in by (the CLI, the HTTP service, the
dashboard): retry failed jobs, cancel jobs that have not run; one job or every job a filter
matches. One wording for each refusal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from provision.filters import filter_fields
from worker import pauses
from worker.errors import ProvisionerError
from worker.jobs import audit
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


def act_on_job(
    store: JobStore,
    action: str,
    ref: str,
    *,
    actor: str,
    within: Sequence[str] | None = None,
    door: str = "cli",
) -> ProvisioningJob:
    """Retry or cancel one job, by id or idempotency key (of the accounts ``within``, if
    given: another account's job is not found); the job as it is now. Raises JobNotFoundError
    or WrongStatusError. Recorded in the audit trail as done by ``actor`` through ``door``."""
    job = store.find(ref)
    if job is None or (within is not None and job.account not in within):
        raise JobNotFoundError(ref)
    done = store.retry(job.id) if action == "retry" else store.cancel(job.id)
    now = store.get(job.id)
    if now is None:
        raise JobNotFoundError(ref)
    if not done:
        raise WrongStatusError(now, action)
    audit.record(store.engine, actor, action, target=job.id, count=1, detail=door)
    return now


def act_on_matching(
    store: JobStore, action: str, where: JobFilter, *, actor: str, door: str = "cli"
) -> Changed:
    """Retry or cancel every job ``where`` matches (give a filter with a field: an empty one
    matches every job). A retry resumes the paused accounts that hold any of them. Recorded in
    the audit trail, with the filter and the count, as done by ``actor`` through ``door``."""
    if action == "retry":
        retried = pauses.retry_matching(store, where)
        changed = Changed(retried.ids, retried.resumed)
    else:
        changed = Changed(store.cancel_matching(where))
    fields = filter_fields(where)
    if where.within is not None:
        fields["within"] = ",".join(where.within)
    audit.record(
        store.engine,
        actor,
        action,
        target="filter",
        filter=fields,
        count=len(changed.ids),
        detail=door,
    )
    for account in changed.resumed:
        audit.record(store.engine, actor, "resume", target=account, detail=door)
    return changed


def count_matching(store: JobStore, action: str, where: JobFilter) -> int:
    """How many jobs ``where`` matches that ``action`` would change now."""
    return store.count(where, APPLIES_TO[action])
