"""The steps of each operation (mapped in :mod:`worker.service`) and the ``Run`` they act
through: one API call at a time with in-process retries, each finished step checkpointed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from worker import metrics
from worker.errors import (
    AuthenticationError,
    BadRequestError,
    DomainTakenError,
    NotFoundError,
    PaymentRequiredError,
    PermanentError,
)
from worker.jobs.claims import Claim, Claims
from worker.jobs.specs import GoalRecord, GoalSpec, JobRequest, Progress, SiteRecord
from worker.jobs.states import Operation
from worker.plausible import Goal, PlausibleClient, SharedLink, Site
from worker.retrying import RetryPolicy

T = TypeVar("T")


class JobFailed(Exception):
    """A step decided the job cannot succeed; carries the code recorded in the status table."""

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


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
    #: Called before every call: raises LeaseLostError once the claim is lost
    #: (``LeaseKeeper.confirm``), so a process taken for dead makes no further call.
    confirm: Callable[[Claim], None] | None = None

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
            if self.confirm is not None:
                self.confirm(self.claim)
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
    props = list(run.progress.custom_props)
    for prop in run.request.custom_props:
        if prop not in props:
            with metrics.step("custom_prop"):
                run.call(lambda prop=prop: run.client.add_custom_prop(domain, prop))  # type: ignore[misc]
            props.append(prop)
            run.save(custom_props=props)
    guests = dict(run.progress.guests)
    for invite in run.request.guests:
        if invite.email not in guests:
            with metrics.step("guest"):
                guest = run.call(
                    lambda invite=invite: run.client.ensure_guest(domain, invite.email, invite.role)  # type: ignore[misc]
                )
            guests[invite.email] = guest.role  # an existing guest keeps its role
            run.save(guests=guests)
    settings = run.request.tracker_script_configuration
    if settings is not None and run.progress.tracker is None:
        # The create carried it; a site adopted (or already there) is set on its own.
        with metrics.step("tracker"):
            found = run.call(lambda: update_tracker(run.client, domain, settings))
        run.save(tracker=tracker_record(found))


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
            request.domain,
            timezone=request.timezone,
            team_id=run.team_id,
            tracker_script_configuration=request.tracker_script_configuration,
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
    if not adopted and request.tracker_script_configuration is not None:
        run.progress.tracker = tracker_record(site)  # saved with the site
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


def update_tracker(client: PlausibleClient, domain: str, settings: dict[str, Any]) -> Site:
    return client.update_site(domain, tracker_script_configuration=settings)


def tracker_record(site: Site) -> dict[str, Any]:
    """The site's tracker script configuration as Plausible answered it, its ``id`` (which
    names the script, and never changes) left out."""
    return {k: v for k, v in site.tracker_script_configuration.items() if k != "id"}


def goal_record(goal: Goal) -> GoalRecord:
    return GoalRecord(
        id=goal.id,
        goal_type=goal.goal_type,
        event_name=goal.event_name,
        page_path=goal.page_path,
        display_name=goal.display_name,
        custom_props=dict(goal.custom_props),
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


# -- delete_prop, delete_guest -------------------------------------------------------------


def delete_prop(run: Run) -> None:
    """Plausible answers a delete of a property it does not have as done (§7.13)."""
    prop = run.request.custom_prop
    if prop is None:
        raise JobFailed("validation_error", "delete_prop needs a custom_prop")
    with metrics.step("delete"):
        run.call(lambda: run.client.delete_custom_prop(run.request.domain, prop))
    run.progress.deleted = True


def delete_guest(run: Run) -> None:
    """Plausible answers a delete of a guest it does not have as done (§7.16)."""
    email = run.request.email
    if email is None:
        raise JobFailed("validation_error", "delete_guest needs an email")
    with metrics.step("delete"):
        run.call(lambda: run.client.delete_guest(run.request.domain, email))
    run.progress.deleted = True


# -- set_tracker ----------------------------------------------------------------------------------


def set_tracker(run: Run) -> None:
    """Plausible merges the settings into the site's (§7.5): sending them again changes nothing
    more, so a retry after a lost answer is safe."""
    settings = run.request.tracker_script_configuration
    if settings is None:
        raise JobFailed("validation_error", "set_tracker needs a tracker_script_configuration")
    with metrics.step("tracker"):
        site = run.call(lambda: update_tracker(run.client, run.request.domain, settings))
    run.progress.tracker = tracker_record(site)


STEPS: dict[Operation, Callable[[Run], None]] = {
    Operation.provision_site: provision_site,
    Operation.delete_site: delete_site,
    Operation.delete_goal: delete_goal,
    Operation.delete_prop: delete_prop,
    Operation.delete_guest: delete_guest,
    Operation.set_tracker: set_tracker,
}
