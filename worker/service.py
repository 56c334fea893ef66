"""The provisioning pipeline as plain code: no Celery here, so it runs the same under a Celery
worker, in embedded threads, or straight from a test.

A job runs in named steps. Each finished step is checkpointed in the status table before the
next one starts, so a redelivered or retried job resumes at the first unfinished step:

provision_site   ensure site (create, or adopt it when the domain is already ours)
                 -> ensure each goal -> ensure each shared link
delete_site      delete; a 404 after an earlier attempt of this job means it is already gone
delete_goal      resolve the goal id (given, from the status table, or from the goals list)
                 -> delete; a 404 after an earlier attempt means it is already gone
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlmodel import Session, col, select

from worker.errors import (
    AuthenticationError,
    DomainTakenError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from worker.models import GoalSpec, JobRequest, JobStatus, Operation, ProvisioningJob
from worker.plausible import Goal, PlausibleClient
from worker.quota import QuotaGate
from worker.retrying import RetryPolicy
from worker.store import Claim, JobStore, LeaseLostError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Parked jobs wake at random within this many seconds after their quota window reopens, so they
#: don't all hit the API in the same instant.
RATE_LIMIT_SPREAD_SECONDS = 5.0


class JobFailed(Exception):
    """A step decided the job cannot succeed; carries the code recorded in the status table."""

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass
class Run:
    """One attempt at one job."""

    claim: Claim
    client: PlausibleClient
    store: JobStore
    policy: RetryPolicy
    lease_seconds: float
    progress: dict[str, Any] = field(default_factory=dict)
    gate: QuotaGate | None = None
    #: When the lease was last extended, by the store's clock (the one leases are measured on).
    renewed_at: datetime | None = None

    @property
    def request(self) -> JobRequest:
        return self.claim.request

    def call(self, fn: Callable[[], T]) -> T:
        """One API call, with in-process retries. Before each try the lease is renewed if a
        third of it has passed, and nothing goes out while the quota gate is shut."""

        def attempt() -> T:
            now = self.store.clock()
            if now - (self.renewed_at or now) >= timedelta(seconds=self.lease_seconds / 3):
                self.store.renew(self.claim, lease_seconds=self.lease_seconds)
                self.renewed_at = now
            if self.gate is None:
                return fn()
            self.gate.check()
            try:
                return fn()
            except RateLimitedError as exc:
                self.gate.close(exc)
                raise

        return self.policy.call(attempt)

    def save(self, **changes: Any) -> None:
        self.progress.update(changes)
        self.store.checkpoint(self.claim, self.progress, lease_seconds=self.lease_seconds)
        self.renewed_at = self.store.clock()


@dataclass(frozen=True)
class Pipeline:
    """Everything a job needs; built once per worker process."""

    store: JobStore
    client: PlausibleClient
    policy: RetryPolicy
    lease_seconds: float
    max_attempts: int
    gate: QuotaGate | None = None

    def run(self, job_id: str) -> JobStatus | None:
        """Run the job if it can be claimed; returns its new status, or None if not claimed."""
        claim = self.store.claim(job_id, lease_seconds=self.lease_seconds)
        if claim is None:
            log.info("job %s not claimable (running elsewhere, done, or not due)", job_id)
            return None
        run = Run(
            claim,
            self.client,
            self.store,
            self.policy,
            self.lease_seconds,
            dict(claim.progress),
            self.gate,
            renewed_at=self.store.clock(),
        )
        try:
            if claim.attempts > self.max_attempts:
                raise JobFailed(
                    "too_many_attempts", f"gave up after {claim.attempts - 1} attempts"
                )
            STEPS[claim.request.operation](run)
        except LeaseLostError:
            log.warning("job %s: lease lost to another worker; stopping", job_id)
            return None
        except JobFailed as exc:
            return self._fail(run, exc.code, exc.message, exc.http_status)
        except PermanentError as exc:
            return self._fail(run, exc.code, exc.message, exc.status)
        except RateLimitedError as exc:
            until = exc.reset_at + timedelta(seconds=random.uniform(0, RATE_LIMIT_SPREAD_SECONDS))
            return self._park(run, until, exc.code, exc.message, exc.status, refund_attempt=True)
        except TransientError as exc:
            delay = self.policy.job_backoff(claim.attempts)
            until = self.store.clock() + timedelta(seconds=delay)
            return self._park(run, until, exc.code, exc.message, exc.status)
        self.store.succeed(claim, run.progress)
        log.info("job %s succeeded after %d attempt(s)", job_id, claim.attempts)
        return JobStatus.succeeded

    def _fail(self, run: Run, code: str, message: str, status: int | None) -> JobStatus | None:
        log.warning("job %s failed: %s: %s", run.claim.job_id, code, message.strip())
        try:
            self.store.fail(run.claim, code=code, message=message, http_status=status, progress=run.progress)
        except LeaseLostError:
            return None
        return JobStatus.failed

    def _park(
        self,
        run: Run,
        until: datetime,
        code: str,
        message: str,
        status: int | None,
        *,
        refund_attempt: bool = False,
    ) -> JobStatus | None:
        log.info("job %s parked until %s: %s", run.claim.job_id, until.isoformat(), code)
        try:
            self.store.park(
                run.claim,
                until=until,
                code=code,
                message=message,
                http_status=status,
                progress=run.progress,
                refund_attempt=refund_attempt,
            )
        except LeaseLostError:
            return None
        return JobStatus.waiting


# -- provision_site ------------------------------------------------------------------------------


def provision_site(run: Run) -> None:
    site = run.progress.get("site")
    if site is None:
        site = ensure_site(run)
        run.save(site=site)
    domain: str = site["domain"]
    goals: dict[str, Any] = dict(run.progress.get("goals", {}))
    for spec in run.request.goals:
        if spec.natural_key not in goals:
            goal = run.call(lambda spec=spec: ensure_goal(run.client, domain, spec))  # type: ignore[misc]
            goals[spec.natural_key] = goal_record(goal)
            run.save(goals=goals)
    links: dict[str, str] = dict(run.progress.get("shared_links", {}))
    for name in run.request.shared_links:
        if name not in links:
            link = run.call(lambda name=name: run.client.ensure_shared_link(domain, name))  # type: ignore[misc]
            links[name] = link.url
            run.save(shared_links=links)


def ensure_site(run: Run) -> dict[str, Any]:
    """Create the site; if the domain is taken and our key can see it, it is ours: adopt it.

    Creating is not idempotent. A retry after a lost response finds the domain taken, and the
    GET that follows is how we learn the first attempt did succeed.
    """
    request = run.request
    try:
        site = run.call(lambda: run.client.create_site(request.domain, timezone=request.timezone))
        adopted = False
    except DomainTakenError as taken:
        try:
            site = run.call(lambda: run.client.get_site(request.domain))
        except (AuthenticationError, NotFoundError):
            raise JobFailed(
                "domain_taken",
                f"{request.domain} is registered to a site this API key cannot access",
                taken.status,
            ) from None
        adopted = True
    return {"domain": site.domain, "timezone": site.timezone, "adopted": adopted}


def ensure_goal(client: PlausibleClient, domain: str, spec: GoalSpec) -> Goal:
    return client.ensure_goal(
        domain,
        goal_type=spec.goal_type,
        event_name=spec.event_name,
        page_path=spec.page_path,
        display_name=spec.display_name,
        custom_props=spec.custom_props or None,
    )


def goal_record(goal: Goal) -> dict[str, Any]:
    return {
        "id": goal.id,
        "goal_type": goal.goal_type,
        "event_name": goal.event_name,
        "page_path": goal.page_path,
        "display_name": goal.display_name,
    }


# -- delete_site ---------------------------------------------------------------------------------


def delete_site(run: Run) -> None:
    domain = run.request.domain
    run.call(_delete_once(run, "site_not_found", lambda: run.client.delete_site(domain)))


def _delete_once(run: Run, gone_code: str, delete: Callable[[], object]) -> Callable[[], None]:
    """A delete that counts "not found" as success when an earlier try of this job was sent:
    that earlier try did the deleting and only its answer was lost."""

    def attempt() -> None:
        sent_before = bool(run.progress.get("delete_sent"))
        if not sent_before:
            run.save(delete_sent=True)
        try:
            delete()
        except NotFoundError as exc:
            if exc.code != gone_code or not sent_before:
                raise
            run.progress["already_gone"] = True
        run.progress["deleted"] = True

    return attempt


# -- delete_goal ---------------------------------------------------------------------------------


def delete_goal(run: Run) -> None:
    domain = run.request.domain
    goal_id = run.progress.get("goal_id")
    if goal_id is None:
        goal_id = run.request.goal_id or resolve_goal_id(run)
        run.save(goal_id=goal_id)
    run.call(_delete_once(run, "goal_not_found", lambda: run.client.delete_goal(domain, goal_id)))


def resolve_goal_id(run: Run) -> int:
    """The id of the goal named by event name or page path: from our own records if a job of ours
    created it, otherwise from Plausible's goals list."""
    spec = run.request.goal
    if spec is None:
        raise JobFailed("validation_error", "delete_goal needs a goal_id, event_name or page_path")
    known = goal_id_from_history(run.store, run.request.domain, spec.natural_key)
    if known is not None:
        return known
    for goal in run.call(lambda: list(run.client.list_goals(run.request.domain))):
        if goal.goal_type == spec.goal_type and (
            goal.event_name == spec.event_name if spec.goal_type == "event" else goal.page_path == spec.page_path
        ):
            return goal.id
    raise JobFailed(
        "goal_not_found", f"no {spec.goal_type} goal {spec.natural_key.split(':', 1)[1]!r} on {run.request.domain}", 404
    )


def goal_id_from_history(store: JobStore, domain: str, natural_key: str) -> int | None:
    t = ProvisioningJob
    with Session(store.engine) as session:
        rows = session.exec(
            select(t)
            .where(t.domain == domain, t.operation == Operation.provision_site)
            .where(t.status == JobStatus.succeeded)
            .order_by(col(t.finished_at).desc())
        ).all()
    for job in rows:
        goal = job.progress.get("goals", {}).get(natural_key)
        if goal is not None:
            return int(goal["id"])
    return None


STEPS: dict[Operation, Callable[[Run], None]] = {
    Operation.provision_site: provision_site,
    Operation.delete_site: delete_site,
    Operation.delete_goal: delete_goal,
}
