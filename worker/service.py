"""The provisioning pipeline as plain code: no Celery here, so it runs the same under a Celery
worker, in embedded threads, or straight from a test.

A job runs in named steps. Each finished step is checkpointed in the status table before the
next one starts, so a redelivered or retried job resumes at the first unfinished step:

provision_site   ensure site (create, or adopt it when the domain is already ours)
                 -> ensure each goal -> ensure each shared link
delete_site      delete; a 404 after a try whose outcome was unknown means it is already gone
delete_goal      resolve the goal id (given, from the status table, or from the goals list)
                 -> delete; likewise, and a stale id from our records is looked up again

The steps live in :mod:`worker.steps`; this module claims the job, runs its steps and records
how the run ended.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from worker import leases, metrics
from worker.accounts import Accounts
from worker.errors import (
    AuthenticationError,
    NotFoundError,
    NotTheApiError,
    PaymentRequiredError,
    PermanentError,
    QuotaWait,
    RateLimitedError,
    TransientError,
)
from worker.jobs.claims import Claim, Claims
from worker.jobs.specs import Progress, calls_needed
from worker.jobs.states import JobStatus, Operation
from worker.jobs.table import LeaseLostError
from worker.leases import LeaseKeeper
from worker.logs import job_context
from worker.pauses import PAUSING, PROBE_SITE, Pause, Pauses
from worker.plausible import PlausibleClient
from worker.quota.limiter import Limiter
from worker.quota.permits import JobPermits
from worker.retrying import RetryPolicy
from worker.steps import STEPS, JobFailed, Run, TimeBudgetSpent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the job's new status and, unless it succeeded, the error code."""

    status: JobStatus
    code: str | None = None


#: The ``status`` label of ``provisioner_jobs_total`` for each new status of a job.
_ENDED = {
    JobStatus.succeeded: "succeeded",
    JobStatus.failed: "failed",
    JobStatus.queued: "requeued",
    JobStatus.waiting: "waiting",
}


@dataclass(frozen=True)
class Pipeline:
    """Everything a job needs; built once per worker process (or thread)."""

    store: Claims
    #: One client per account, each with that account's key.
    clients: Mapping[str, PlausibleClient]
    accounts: Accounts
    limiter: Limiter
    policy: RetryPolicy
    lease_seconds: float
    max_attempts: int
    #: Seconds a run may take before it hands its slot back at a checkpoint (None: no limit).
    time_budget: float | None = None
    #: Exceptions that stop a run from outside, like Celery's soft time limit: the job goes back
    #: to the queue at its checkpoint instead of failing.
    interruptions: tuple[type[BaseException], ...] = ()
    #: Keeps the leases of this process's runs alive (None: only checkpoints renew them).
    keeper: LeaseKeeper | None = None
    #: Accounts whose jobs wait because of an account-level error (None: never paused).
    pauses: Pauses | None = None

    def run(self, job_id: str) -> JobStatus | None:
        """Run the job if it can be claimed; returns its new status, or None if not claimed."""
        outcome = self.execute(job_id)
        return None if outcome is None else outcome.status

    def execute(self, job_id: str) -> Outcome | None:
        """``run``, returning the error code too. Every line logged meanwhile, by any module,
        carries the job's fields; the run's end is counted in the metrics."""
        with job_context(job_id=job_id):
            claim = self.store.claim(
                job_id, lease_seconds=self.lease_seconds, owner=leases.process_id()
            )
            if claim is None:
                log.info("job %s not claimable (running elsewhere, done, or not due)", job_id)
                return None
            request = claim.request
            fields = {
                "idempotency_key": claim.idempotency_key,
                "domain": request.domain,
                "operation": request.operation.value,
                "account": request.account,
            }
            started = time.monotonic()
            outcome: Outcome | None = None
            ended = "interrupted"  # unless the run gets to a status (the sweeper re-drives it)
            try:
                with job_context(**fields):
                    outcome = self._execute(claim)
                ended = "lease_lost" if outcome is None else _ENDED[outcome.status]
            finally:
                metrics.JOBS.labels(ended, request.operation.value, request.account).inc()
                if outcome is not None and outcome.code is not None:
                    metrics.JOB_ERRORS.labels(ended, outcome.code).inc()
                metrics.JOB_RUN_SECONDS.labels(request.operation.value).observe(
                    time.monotonic() - started
                )
            return outcome

    def _execute(self, claim: Claim) -> Outcome | None:
        progress = claim.progress.model_copy(deep=True)
        name = claim.request.account
        if name not in self.accounts or name not in self.clients:
            message = f"account {name!r} is not configured on this worker"
            return self._fail(claim, progress, "unknown_account", message, None)
        account = self.accounts.get(name)
        pause = self.pauses.active().get(name) if self.pauses is not None else None
        if pause is not None and pause.stops(claim.request.operation):
            # Certain to fail: no call, back to the queue until the account resumes.
            return self._requeue(claim, progress, pause.code, _paused(pause), None)
        permits = JobPermits(
            self.limiter,
            account.quota,
            claim.priority,
            claim.permits,
            needed=lambda: calls_needed(claim.request, run.progress),
        )
        run = Run(
            claim,
            self.clients[name].using(permits),
            self.store,
            self.policy,
            self.lease_seconds,
            progress,
            account.team_id,
            deadline=None if self.time_budget is None else time.monotonic() + self.time_budget,
            confirm=self.keeper.confirm if self.keeper is not None else None,
        )
        held = self.keeper.hold(claim) if self.keeper is not None else contextlib.nullcontext()
        try:
            with held:
                return self._run(run)
        finally:
            permits.release()

    def _run(self, run: Run) -> Outcome | None:
        claim, job_id = run.claim, run.claim.job_id
        try:
            if claim.attempts > self.max_attempts:
                raise JobFailed("too_many_attempts", f"gave up after {claim.attempts - 1} attempts")
            STEPS[claim.request.operation](run)
            self.store.succeed(claim, run.progress)
        except LeaseLostError:
            log.warning("job %s: lease lost to another worker; stopping", job_id)
            return None
        except JobFailed as exc:
            return self._fail(claim, run.progress, exc.code, exc.message, exc.http_status)
        except (AuthenticationError, PaymentRequiredError, NotTheApiError) as exc:
            return self._account_error(claim, run, exc)
        except PermanentError as exc:
            return self._fail(claim, run.progress, exc.code, exc.message, exc.status)
        except (QuotaWait, RateLimitedError) as exc:
            # No room in the quota (or Plausible said so): back to the scheduler at the checkpoint.
            status = exc.status if isinstance(exc, RateLimitedError) else None
            return self._requeue(claim, run.progress, exc.code, exc.message, status)
        except TimeBudgetSpent:
            message = f"used its {self.time_budget:g} s time budget; resumes at its checkpoint"
            return self._requeue(claim, run.progress, "time_budget", message, None)
        except TransientError as exc:
            delay = self.policy.job_backoff(claim.attempts)
            until = self.store.clock() + timedelta(seconds=delay)
            return self._park(claim, run.progress, until, exc.code, exc.message, exc.status)
        except SQLAlchemyError:
            raise  # the status table is unreachable: the job keeps its lease, the sweeper re-drives it
        except self.interruptions as exc:
            # Stopped from outside (a time limit): whatever the call in flight did is covered by
            # the intent recorded before it, so the job simply resumes at its checkpoint.
            message = f"interrupted ({type(exc).__name__}); resumes at its checkpoint"
            return self._requeue(claim, run.progress, "interrupted", message, None)
        except Exception as exc:
            # A bug or an input nobody foresaw: retrying the same code on the same input would fail
            # the same way, so fail now (an operator can retry) instead of looping until the limit.
            log.exception("job %s crashed", job_id)
            message = f"{type(exc).__name__} while running the job"
            return self._fail(claim, run.progress, "internal_error", message, None)
        log.info("job %s succeeded after %d attempt(s)", job_id, claim.attempts)
        return Outcome(JobStatus.succeeded)

    def _account_error(self, claim: Claim, run: Run, exc: PermanentError) -> Outcome | None:
        """A refused key, a 402 or no API at the base URL: pause the account if it is the
        account's, else fail the job.
        A probe that cannot run now (no quota, a transient error) leaves the job to try again."""
        if exc.code not in PAUSING or self.pauses is None:
            return self._fail(claim, run.progress, exc.code, exc.message, exc.status)
        try:
            wide = self._account_wide(run, exc)
        except (QuotaWait, RateLimitedError, TimeBudgetSpent) as undecided:
            message = f"{exc.code}: to be checked once there is room ({undecided})"
            return self._requeue(claim, run.progress, exc.code, message, exc.status)
        except TransientError as undecided:
            delay = self.policy.job_backoff(claim.attempts)
            until = self.store.clock() + timedelta(seconds=delay)
            return self._park(claim, run.progress, until, undecided.code, undecided.message,
                              undecided.status)  # fmt: skip
        if not wide:
            return self._fail(claim, run.progress, exc.code, exc.message, exc.status)
        key = self.accounts.get(claim.request.account).api_key().get_secret_value()
        pause = self.pauses.pause(claim.request.account, exc.code, exc.message, key)
        log.warning("%s", _paused(pause))
        return self._requeue(claim, run.progress, exc.code, _paused(pause), exc.status)

    def _account_wide(self, run: Run, exc: PermanentError) -> bool:
        """Whether the error is the account's: a refused key on a call that names no site (a
        create) or on our own site; else (a delete of a site another team may own) one probe
        decides, a lookup on a site that cannot exist."""
        if (
            not isinstance(exc, AuthenticationError)
            or run.request.operation is Operation.provision_site
        ):
            return True
        try:
            run.call(
                lambda: run.client.ensure_goal(PROBE_SITE, goal_type="event", event_name="probe")
            )
        except NotFoundError:
            return False  # the key works: this site is out of its reach
        except (AuthenticationError, PaymentRequiredError):
            return True
        except PermanentError:
            return False
        return False

    def _fail(
        self, claim: Claim, progress: Progress, code: str, message: str, status: int | None
    ) -> Outcome | None:
        log.warning("job %s failed: %s: %s", claim.job_id, code, message.strip())
        try:
            self.store.fail(
                claim, code=code, message=message, http_status=status, progress=progress
            )
        except LeaseLostError:
            return None
        return Outcome(JobStatus.failed, code)

    def _requeue(
        self, claim: Claim, progress: Progress, code: str, message: str, status: int | None
    ) -> Outcome | None:
        log.info("job %s back to the scheduler: %s", claim.job_id, message)
        try:
            self.store.requeue(
                claim, code=code, message=message, http_status=status, progress=progress
            )
        except LeaseLostError:
            return None
        return Outcome(JobStatus.queued, code)

    def _park(
        self,
        claim: Claim,
        progress: Progress,
        until: datetime,
        code: str,
        message: str,
        status: int | None,
    ) -> Outcome | None:
        log.info("job %s parked until %s: %s", claim.job_id, until.isoformat(), code)
        try:
            self.store.park(
                claim,
                until=until,
                code=code,
                message=message,
                http_status=status,
                progress=progress,
            )
        except LeaseLostError:
            return None
        return Outcome(JobStatus.waiting, code)


def _paused(pause: Pause) -> str:
    what = "new sites" if pause.scope == "provision" else "jobs"
    said = pause.message.strip()
    said += "" if said.endswith((".", "!", "?")) else "."  # some of Plausible's have no stop
    return (
        f"account {pause.account} paused ({pause.code}): {said} Its {what} wait; "
        f"{pause.how_to_resume}"
    )
