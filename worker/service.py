"""The provisioning pipeline as plain code: no Celery here, so it runs the same under a Celery
worker, in embedded threads, or straight from a test.

A job runs in named steps. Each finished step is checkpointed in the status table before the
next one starts, so a redelivered or retried job resumes at the first unfinished step:

provision_site   ensure site (create, or adopt it when the domain is already ours)
                 -> ensure each goal -> ensure each shared link
delete_site      delete; a 404 after a try whose outcome was unknown means it is already gone
delete_goal      resolve the goal id (given, from the status table, or from the goals list)
                 -> delete; likewise, and a stale id from our records is looked up again
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from worker import leases, metrics
from worker.accounts import Accounts
from worker.errors import (
    AuthenticationError,
    BadRequestError,
    DomainTakenError,
    NotFoundError,
    PaymentRequiredError,
    PermanentError,
    QuotaWait,
    RateLimitedError,
    TransientError,
)
from worker.jobs.claims import Claim, Claims
from worker.jobs.specs import GoalRecord, GoalSpec, JobRequest, Progress, SiteRecord, calls_needed
from worker.jobs.states import JobStatus, Operation
from worker.jobs.table import LeaseLostError
from worker.leases import LeaseKeeper
from worker.logs import job_context
from worker.pauses import PAUSING, PROBE_SITE, Pause, Pauses
from worker.plausible import Goal, PlausibleClient, SharedLink, Site
from worker.quota.limiter import Limiter
from worker.quota.permits import JobPermits
from worker.retrying import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")


class JobFailed(Exception):
    """A step decided the job cannot succeed; carries the code recorded in the status table."""

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


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


@dataclass
class Run:
    """One attempt at one job. ``client`` is bound to the job's quota permits, so every request
    it sends (list pages, retries and adoption GETs included) takes a permit first."""

    claim: Claim
    client: PlausibleClient
    store: Claims
    policy: RetryPolicy
    lease_seconds: float
    progress: Progress = field(default_factory=Progress)
    team_id: str | None = None
    #: ``monotonic()`` after which the run hands its slot back at the next call (None: never).
    deadline: float | None = None
    monotonic: Callable[[], float] = time.monotonic
    #: API calls this run has made (tries included).
    calls: int = 0

    @property
    def request(self) -> JobRequest:
        return self.claim.request

    def call(self, fn: Callable[[], T]) -> T:
        """One API call, with in-process retries. Past its time budget the run stops before
        the call (``TimeBudgetSpent``): the job resumes from its last checkpoint."""

        def attempt() -> T:
            # After one call at least, so every run makes progress however slow the API.
            if self.calls and self.deadline is not None and self.monotonic() >= self.deadline:
                raise TimeBudgetSpent
            self.calls += 1
            return fn()

        return self.policy.call(attempt)

    def save(self, **changes: Any) -> None:
        """Record finished steps (``Progress`` fields) before the next one starts."""
        for name, value in changes.items():
            setattr(self.progress, name, value)
        self.store.checkpoint(self.claim, self.progress, lease_seconds=self.lease_seconds)


class TimeBudgetSpent(Exception):
    """The run has used its time budget; the job goes back to the queue at its checkpoint."""


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
                job_id, lease_seconds=self.lease_seconds, owner=leases.this_process()
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
        except (AuthenticationError, PaymentRequiredError) as exc:
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
        """A refused key or a 402: pause the account if it is the account's, else fail the job.
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


# -- provision_site ------------------------------------------------------------------------------


def provision_site(run: Run) -> None:
    site = run.progress.site
    if site is None:
        with metrics.step("site"):
            site = ensure_site(run)
        run.save(site=site)
    domain = site.domain
    goals = dict(run.progress.goals)
    for spec in run.request.goals:
        if spec.natural_key not in goals:
            with metrics.step("goal"):
                goal = run.call(lambda spec=spec: ensure_goal(run.client, domain, spec))  # type: ignore[misc]
            goals[spec.natural_key] = goal_record(goal)
            run.save(goals=goals)
    links = dict(run.progress.shared_links)
    for name in run.request.shared_links:
        if name not in links:
            with metrics.step("shared_link"):
                link = run.call(lambda name=name: ensure_shared_link(run.client, domain, name))  # type: ignore[misc]
            links[name] = link.url
            run.save(shared_links=links)


def ensure_site(run: Run) -> SiteRecord:
    """Create the site; if the domain is taken and our key can see it, it is ours: adopt it.

    Creating is not idempotent. The intent is recorded before the request goes out; a retry after
    a lost response (or a worker killed mid-call) finds the domain taken, and the GET that follows
    is how we learn the create did succeed. A site already in the account before the job is
    adopted too, and marked ``existed``.
    """
    request = run.request
    earlier = run.progress.create_sent  # a create of an earlier attempt may have gone through
    tries = 0

    def create() -> Site:
        nonlocal tries
        tries += 1
        if not run.progress.create_sent:
            run.save(create_sent=True)  # before it goes out, so a lost answer is known later
        return run.client.create_site(
            request.domain, timezone=request.timezone, team_id=run.team_id
        )

    try:
        site = run.call(create)
        adopted = False
    except DomainTakenError as taken:
        try:
            site = run.call(lambda: run.client.get_site(request.domain))
        except (AuthenticationError, NotFoundError, PaymentRequiredError):
            # 401/402/404 on a domain that exists: it belongs to a team this key cannot reach.
            raise JobFailed(
                "domain_taken",
                f"{request.domain} is registered to a site this API key cannot access",
                taken.status,
            ) from None
        adopted = True
    # Adopted after a create of ours that may have gone through: the site is that create's. Adopted
    # without one: the site was in the account before this job (another job, or the UI).
    existed = adopted and not earlier and tries == 1
    return SiteRecord(domain=site.domain, timezone=site.timezone, adopted=adopted, existed=existed)


def ensure_goal(client: PlausibleClient, domain: str, spec: GoalSpec) -> Goal:
    return client.ensure_goal(
        domain,
        goal_type=spec.goal_type,
        event_name=spec.event_name,
        page_path=spec.page_path,
        display_name=spec.display_name,
        custom_props=spec.custom_props or None,
    )


def ensure_shared_link(client: PlausibleClient, domain: str, name: str) -> SharedLink:
    try:
        return client.ensure_shared_link(domain, name)
    except BadRequestError as exc:
        if "has already been taken" not in exc.message:
            raise
        # A concurrent find-or-create of the same name won the race (§7.7): the link exists now.
        return client.ensure_shared_link(domain, name)


def goal_record(goal: Goal) -> GoalRecord:
    return GoalRecord(
        id=goal.id,
        goal_type=goal.goal_type,
        event_name=goal.event_name,
        page_path=goal.page_path,
        display_name=goal.display_name,
    )


# -- delete_site ---------------------------------------------------------------------------------


def delete_site(run: Run) -> None:
    domain = run.request.domain
    with metrics.step("delete"):
        run.call(_delete_once(run, "site_not_found", lambda: run.client.delete_site(domain)))


def _delete_once(run: Run, gone_code: str, delete: Callable[[], object]) -> Callable[[], None]:
    """A delete that counts "not found" as success when an earlier try of this job may have done
    the deleting. The intent is written down before each request goes out, so a try whose answer
    never came (a network error, a 5xx, or a worker killed mid-call) counts; a definite "no"
    (any other 4xx) takes it back, so a delete of something that never existed still fails."""

    def attempt() -> None:
        maybe_done = run.progress.delete_outcome_unknown
        if not maybe_done:
            run.save(delete_outcome_unknown=True)
        try:
            delete()
        except NotFoundError as exc:
            if exc.code != gone_code or not maybe_done:
                run.progress.delete_outcome_unknown = maybe_done
                raise
            run.progress.already_gone = True
        except PermanentError:
            run.progress.delete_outcome_unknown = maybe_done  # this try certainly did nothing
            raise
        run.progress.deleted = True

    return attempt


# -- delete_goal ---------------------------------------------------------------------------------


def delete_goal(run: Run) -> None:
    domain = run.request.domain
    if run.progress.goal_id is None:
        goal_id, source = resolve_goal_id(run)
        run.save(goal_id=goal_id, goal_id_source=source)

    def delete() -> bool:
        assert run.progress.goal_id is not None
        return run.client.delete_goal(domain, run.progress.goal_id)

    with metrics.step("delete"):
        try:
            run.call(_delete_once(run, "goal_not_found", delete))
        except NotFoundError as exc:
            if exc.code != "goal_not_found" or run.progress.goal_id_source != "history":
                raise
            # Our record is stale: the goal was deleted and made again outside the provisioner.
            run.save(goal_id=goal_id_from_list(run), goal_id_source="list")
            run.call(_delete_once(run, "goal_not_found", delete))


def resolve_goal_id(run: Run) -> tuple[int, Literal["request", "history", "list"]]:
    """The goal's id and where it came from: the request, our own records (a job of ours made
    the goal), or Plausible's goals list."""
    if run.request.goal_id is not None:
        return run.request.goal_id, "request"
    spec = run.request.goal
    if spec is None:
        raise JobFailed("validation_error", "delete_goal needs a goal_id, event_name or page_path")
    known = run.store.goal_id_from_history(run.request.domain, spec.natural_key)
    if known is not None:
        return known, "history"
    return goal_id_from_list(run), "list"


def goal_id_from_list(run: Run) -> int:
    spec = run.request.goal
    assert spec is not None
    for goal in run.call(lambda: list(run.client.list_goals(run.request.domain))):
        same = (
            goal.event_name == spec.event_name
            if spec.goal_type == "event"
            else goal.page_path == spec.page_path
        )
        if goal.goal_type == spec.goal_type and same:
            return goal.id
    name = spec.event_name if spec.goal_type == "event" else spec.page_path
    raise JobFailed(
        "goal_not_found", f"no {spec.goal_type} goal {name!r} on {run.request.domain}", 404
    )


STEPS: dict[Operation, Callable[[Run], None]] = {
    Operation.provision_site: provision_site,
    Operation.delete_site: delete_site,
    Operation.delete_goal: delete_goal,
}


def _paused(pause: Pause) -> str:
    what = "new sites" if pause.scope == "provision" else "jobs"
    return (
        f"account {pause.account} paused ({pause.code}): {pause.message.strip()} Its {what} wait; "
        f"fix the account, or run `provision retry --account {pause.account}`"
    )
