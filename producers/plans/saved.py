"""A plan against the status database: the inventory it reads and the fingerprint of it, the
cost line, the plan as a file (``--out``), and applying it as one batch.

Idempotency keys come from the plan's identity (its set, account, inventory fingerprint and
jobs) and each job's resource, so applying the same plan twice makes no second job. A saved plan
is refused once the inventory of the domains it looked at has changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from producers.plans.desired import DesiredState
from producers.plans.planner import Change, Plan, PlannedJob, make_plan
from producers.plans.refresh import Refreshed
from worker.errors import ProvisionerError
from worker.jobs.db import insert_ignoring, table_of
from worker.jobs.intake import BatchOf, BulkResult, NewJob
from worker.jobs.inventory import SiteView
from worker.jobs.models import PlanRow
from worker.jobs.specs import JobRequest, Progress
from worker.jobs.states import JobStatus, Operation, Priority
from worker.jobs.store import JobStore
from worker.quota.report import Reporter
from worker.quota.windows import HOUR

FORMAT = 1
#: Inventory sites read per query.
PAGE = 500
#: A plan's jobs are a batch of work like an import's: the bulk class.
PRIORITY = Priority.bulk


class StalePlanError(ProvisionerError):
    """The inventory changed since the plan was made."""


def inventory(store: JobStore, account: str) -> Iterator[SiteView]:
    """The account's inventory sites with their goals and links, a page at a time."""
    after: tuple[str, str] | None = None
    while page := store.sites([account], limit=PAGE, after=after):
        yield from store.details(page)
        after = (page[-1].domain, page[-1].account)


def fingerprint(
    views: Sequence[SiteView], account: str, set_name: str, domains: Sequence[str]
) -> str:
    """What the inventory says of ``domains`` and which sites ``set_name`` owns: a plan made
    from it holds only while this is unchanged (times and job ids left out)."""
    looked = set(domains)
    rows: list[Any] = []
    for view in views:
        site = view.site
        if site.account != account:
            continue
        if site.domain in looked or site.managed_set == set_name:
            rows.append([site.domain, site.timezone, site.managed_set])
            if site.tracker is not None:
                rows.append([site.domain, "tracker", site.tracker])
            rows += [
                [g.domain, g.natural_key, g.goal_id, g.display_name, g.managed_set]
                for g in view.goals
            ]
            # Apart, as the tracker's: a plan saved before goals recorded them still holds.
            rows += [
                [g.domain, "goal props", g.natural_key, g.custom_props]
                for g in view.goals
                if g.custom_props
            ]
            rows += [[link.domain, link.name] for link in view.links]
            rows += [[p.domain, "prop", p.name, p.managed_set] for p in view.props]
            rows += [[g.domain, "guest", g.email, g.role, g.managed_set] for g in view.guests]
    text = json.dumps(sorted(rows, key=json.dumps), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Cost:
    """The calls an apply needs and when it should be done at the account's quota."""

    calls: int
    hourly: int
    #: Calls of the work already queued on the quota that go before (or round-robin with) these.
    ahead: int
    done_at: datetime | None
    #: All the calls already queued on the quota.
    queued: int = 0
    #: With --refresh: the calls the refresh spent, and the drift it found.
    refreshed: int | None = None
    drift: tuple[str, ...] = ()

    def line(self, now: datetime | None = None) -> str:
        """``Cost: 61 calls; at 600/h with 1,240 calls queued ahead, done about 14:20 UTC
        (2 h 3 min).``"""
        head = f"Cost: {self.calls:,} call{'' if self.calls == 1 else 's'}"
        if self.refreshed is not None:
            head += f" (the refresh spent {self.refreshed:,})"
        if self.done_at is None:
            return f"{head}."
        left = self.done_at - (now or datetime.now(UTC))
        queue = f"{self.ahead:,} calls queued ahead"
        if self.queued > self.ahead:
            queue = f"{self.queued:,} calls queued ({self.ahead:,} of them ahead, round-robin)"
        return (
            f"{head}; at {self.hourly:,}/h with {queue}, "
            f"done about {self.done_at:%H:%M} UTC ({_duration(left)})."
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "hourly": self.hourly,
            "ahead": self.ahead,
            "queued": self.queued,
            "refreshed": self.refreshed,
            "drift": list(self.drift),
            "done_at": None if self.done_at is None else self.done_at.isoformat(),
            "line": self.line(),
        }


def _duration(left: timedelta) -> str:
    minutes = max(0, round(left.total_seconds() / 60))
    if minutes < 1:
        return "under a minute"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def cost(reporter: Reporter, account: str, calls: int, batch_id: str | None = None) -> Cost:
    """The quota scheduler's estimate (``Reporter``) for ``calls`` more bulk calls: the
    interactive work first, then round-robin with the other bulk batches."""
    quota = reporter.accounts.get(account).quota
    names = reporter.accounts.of_quota(quota.name)
    hourly = reporter.limiter.budget(quota, HOUR)
    if calls == 0:
        return Cost(0, hourly, 0, None)
    interactive = reporter.store.open_calls_by_batch(names, Priority.interactive)
    bulk = reporter.store.open_calls_by_batch(names, Priority.bulk)
    others = {batch: n for batch, n in bulk.items() if batch != batch_id}
    ahead = sum(interactive.values()) + sum(min(theirs, calls) for theirs in others.values())
    queued = sum(interactive.values()) + sum(others.values())
    now = reporter.limiter.clock()
    # The same budget arithmetic as a batch's expected completion (Reporter.batch_etas).
    seconds = reporter.seconds_for(quota, ahead + calls, now)
    done = datetime.fromtimestamp(now + seconds, tz=UTC)
    return Cost(calls, hourly, ahead, done, queued)


def make(
    store: JobStore,
    desired: DesiredState,
    targets: Sequence[str] = (),
    *,
    reporter: Reporter | None,
    live: Callable[[list[SiteView], list[str]], Refreshed] | None = None,
) -> tuple[Saved, Cost]:
    """``desired`` planned against the inventory (with ``live``, a refresh, less what is gone
    from Plausible), and its cost (the time only with a ``reporter``)."""
    views = list(inventory(store, desired.account))
    plan = make_plan(desired, views, targets)
    refreshed = None
    if live is not None:
        refreshed = live(views, plan.domains)
        plan = make_plan(desired, refreshed.views, targets)
    fingerprinted = fingerprint(views, desired.account, desired.set, plan.domains)
    saved = Saved(plan, fingerprinted, datetime.now(UTC))
    if reporter is None:
        priced = Cost(plan.calls, 0, 0, None)
    else:
        priced = cost(reporter, desired.account, plan.calls, saved.batch.id)
    if refreshed is not None:
        priced = dataclasses.replace(
            priced, refreshed=refreshed.calls, drift=tuple(refreshed.drift)
        )
    return saved, priced


# -- the plan as a file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Saved:
    """A plan as written by ``--out`` and read by ``apply``."""

    plan: Plan
    inventory: str
    created_at: datetime

    @property
    def identity(self) -> str:
        return self.plan.identity(self.inventory)

    @property
    def batch(self) -> BatchOf:
        """One batch per plan, named after its set."""
        return BatchOf(f"plan-{self.identity[:16]}", f"set {self.plan.set}", "plan")

    def key(self, job: PlannedJob) -> str:
        digest = hashlib.sha256(f"{self.identity}:{job.resource}".encode()).hexdigest()
        return f"plan-{digest[:40]}"

    def as_json(self, cost: Cost | None = None) -> dict[str, Any]:
        plan = self.plan
        return {
            "format": FORMAT,
            "set": plan.set,
            "account": plan.account,
            "created_at": self.created_at.isoformat(timespec="seconds"),
            "inventory": self.inventory,
            "identity": self.identity,
            "batch": self.batch.id,
            "domains": plan.domains,
            "summary": plan.summary(),
            "changes": [
                {
                    "action": c.action,
                    "kind": c.kind,
                    "domain": c.domain,
                    "name": c.name,
                    "detail": c.detail,
                }
                for c in plan.changes
            ],
            "cost": None if cost is None else cost.as_json(),
            "jobs": [
                {
                    "resource": job.resource,
                    "phase": job.phase,
                    "calls": job.calls,
                    "request": job.request.model_dump(mode="json", exclude_none=True),
                    "progress": None
                    if job.progress is None
                    else job.progress.model_dump(mode="json", exclude_defaults=True),
                }
                for job in plan.jobs
            ],
        }


def read(path: Path) -> Saved:
    """A plan written by ``--out``; ProvisionerError (one line) if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProvisionerError(
            f"{path}: not a plan written by provision plan --out ({exc})"
        ) from None
    try:
        return from_json(data)
    except ProvisionerError as exc:
        raise ProvisionerError(f"{path}: {exc}") from None


def from_json(data: Any) -> Saved:
    """A plan as ``Saved.as_json`` wrote it; ProvisionerError if it is not one, or was edited."""
    try:
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        plan = Plan(data["set"], data["account"], list(data["domains"]))
        plan.changes = [Change(**change) for change in data["changes"]]
        plan.jobs = [
            PlannedJob(
                job["resource"],
                JobRequest.model_validate(job["request"]),
                None if job["progress"] is None else Progress.model_validate(job["progress"]),
                int(job["phase"]),
            )
            for job in data["jobs"]
        ]
        saved = Saved(plan, data["inventory"], datetime.fromisoformat(data["created_at"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProvisionerError(f"not a plan written by provision plan ({exc})") from None
    if saved.identity != data.get("identity"):
        raise ProvisionerError("the plan was edited after it was written; plan again")
    return saved


def check_current(store: JobStore, saved: Saved) -> None:
    """Raises StalePlanError if the inventory the plan was made from has changed."""
    plan = saved.plan
    now = fingerprint(list(inventory(store, plan.account)), plan.account, plan.set, plan.domains)
    if now != saved.inventory:
        raise StalePlanError(
            "the inventory has changed since this plan was made (a job finished, or another "
            "apply ran); plan again"
        )


def enqueue(store: JobStore, saved: Saved, phase: int) -> BulkResult:
    """The plan's jobs of ``phase``, into its batch (a job already there is not made again)."""
    jobs = [job for job in saved.plan.jobs if job.phase == phase]
    items = [NewJob(saved.key(job), job.request, PRIORITY, job.progress) for job in jobs]
    return store.enqueue_many(items, batch=saved.batch)


class PlanRefused(ProvisionerError):
    """``apply`` will not start the plan: ``code`` says why (``destroy_not_allowed``,
    ``stale_plan``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Applied:
    """What one call of ``apply`` did. ``pending``: the deletes of replaced goals and guests
    still running; their re-creation is enqueued by the next call once they are done."""

    batch_id: str
    created: int
    duplicate: int
    pending: list[str]
    failed: list[str]
    recreated: bool

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def apply(store: JobStore, saved: Saved, *, allow_destroy: bool = False) -> Applied:
    """Start (or carry on) applying ``saved``: refused if it deletes a site without
    ``allow_destroy``, or if the inventory changed since it was made and it has not started;
    then its jobs of phase 1, and those of phase 2 once the deletes they wait for succeeded.
    Safe to call again: no job is made twice."""
    destroyed = saved.plan.destroys_sites
    if destroyed and not allow_destroy:
        raise PlanRefused(
            "destroy_not_allowed",
            f"the plan deletes {len(destroyed)} site(s) ({', '.join(destroyed)}): their data "
            "is lost and each domain stays blocked for up to 48 hours; nothing was queued. "
            "Apply with --allow-destroy to go ahead",
        )
    # A plan started, whose re-creations wait for their deletes, is carried on: its own jobs
    # are what changed the inventory. Otherwise a changed inventory makes it stale.
    later = [job for job in saved.plan.jobs if job.phase == 2]
    carried_on = any(store.get_by_key(saved.key(job)) is None for job in later) and any(
        store.get_by_key(saved.key(job)) is not None for job in saved.plan.jobs if job.phase == 1
    )
    if not carried_on:
        try:
            check_current(store, saved)
        except StalePlanError as exc:
            raise PlanRefused("stale_plan", str(exc)) from None
    record(store, saved)
    first = enqueue(store, saved, phase=1)
    ids = {**first.created, **first.duplicate}
    again = {job.request.domain for job in later}
    phase1 = [job for job in saved.plan.jobs if job.phase == 1]
    deletes = [
        ids[index]
        for index, job in enumerate(phase1)
        if job.request.operation in (Operation.delete_goal, Operation.delete_guest)
        and job.request.domain in again
        and index in ids
    ]
    found = [job for job in (store.get(job_id) for job_id in deletes) if job is not None]
    pending = [job.id for job in found if not job.status.done]
    failed = [job.id for job in found if job.status.done and job.status is not JobStatus.succeeded]
    created, duplicate = len(first.created), len(first.duplicate)
    recreated = bool(later) and not pending and not failed
    if recreated:
        second = enqueue(store, saved, phase=2)
        created, duplicate = created + len(second.created), duplicate + len(second.duplicate)
    return Applied(saved.batch.id, created, duplicate, pending, failed, recreated)


# -- plans kept ------------------------------------------------------------------------------------


def keep(store: JobStore, saved: Saved, cost: Cost) -> None:
    """Keep a plan just made, readable (``recorded_plan``) before it is applied; made again
    before it is applied, its cost is priced anew."""
    _kept(store, saved, cost=cost.as_json(), applied_at=None)


def record(store: JobStore, saved: Saved) -> None:
    """Mark the plan applied, keeping it if it was not kept when made (once: applying it again
    changes nothing)."""
    _kept(store, saved, cost=None, applied_at=datetime.now(UTC))


def _kept(
    store: JobStore, saved: Saved, *, cost: dict[str, Any] | None, applied_at: datetime | None
) -> None:
    """The plan's row made unless it is there; then, while it is not applied, ``applied_at``
    (if given) or ``cost`` written."""
    plan = saved.plan
    row = {
        "batch_id": saved.batch.id,
        "set": plan.set,
        "account": plan.account,
        "identity": saved.identity,
        "summary": plan.summary()[:1000],
        "calls": plan.calls,
        "changes": [dataclasses.asdict(change) for change in plan.changes],
        "cost": cost,
        "made_at": saved.created_at,
        "applied_at": applied_at,
    }
    values = {"applied_at": applied_at} if applied_at is not None else {"cost": cost}
    with Session(store.engine) as session:
        session.execute(
            insert_ignoring(table_of(PlanRow), store.engine.dialect.name, ["batch_id"]), row
        )
        session.execute(
            update(PlanRow)
            .where(col(PlanRow.batch_id) == saved.batch.id, col(PlanRow.applied_at).is_(None))
            .values(**values)
        )
        session.commit()


def recorded(
    store: JobStore, accounts: Sequence[str] | None = None, *, limit: int = 50
) -> list[PlanRow]:
    """The plans kept, applied or not, newest first by when they were applied or else made (of
    ``accounts`` only, if given)."""
    query = select(PlanRow)
    if accounts is not None:
        query = query.where(col(PlanRow.account).in_(list(accounts)))
    newest = func.coalesce(col(PlanRow.applied_at), col(PlanRow.made_at)).desc()
    query = query.order_by(newest, col(PlanRow.batch_id)).limit(limit)
    with Session(store.engine, expire_on_commit=False) as session:
        return list(session.exec(query).all())


def recorded_plan(
    store: JobStore, batch_id: str, accounts: Sequence[str] | None = None
) -> PlanRow | None:
    """The plan kept as ``batch_id``, applied or not (None if none, or of an account not in
    ``accounts``)."""
    with Session(store.engine, expire_on_commit=False) as session:
        row = session.get(PlanRow, batch_id)
    if row is None or (accounts is not None and row.account not in accounts):
        return None
    return row
