"""``plan --refresh``: the live state of the sites a plan looks at, read through the account's
quota at bulk priority, and the drift between it and the inventory.

Per site: the site (its timezone, custom properties and tracker configuration), its goals (with
their custom properties) and its guests, so about three calls a site (more for a site with over
100 goals or guests). Shared links cannot be listed, so they are never read and never drift. The
inventory is not written: the plan is made from the inventory less what is gone live, and the
apply's jobs record what they do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from worker.accounts import Account
from worker.errors import NotFoundError, PlausibleError, QuotaWait
from worker.jobs.inventory import SiteView
from worker.jobs.models import SiteGoalRow, SiteGuestRow
from worker.jobs.states import Priority
from worker.plausible import Goal, Guest, PlausibleClient
from worker.quota.limiter import Limiter
from worker.quota.permits import JobPermits
from worker.retrying import RetryPolicy
from worker.settings import Settings
from worker.steps import tracker_record

if TYPE_CHECKING:
    from worker.jobs.store import JobStore

T = TypeVar("T")


@dataclass
class Refreshed:
    """The corrected views, the drift found (one line each), and the calls spent."""

    views: list[SiteView]
    drift: list[str] = field(default_factory=list)
    calls: int = 0


class _Counted:
    """The quota's gate for the refresh, counting the requests it lets go."""

    def __init__(self, permits: JobPermits) -> None:
        self.permits = permits
        self.calls = 0

    def before_request(self) -> None:
        self.permits.before_request()
        self.calls += 1

    def after_response(self, error: PlausibleError | None) -> None:
        self.permits.after_response(error)


#: What ``saved.make`` calls to refresh: the inventory's views and the plan's domains in, the
#: views corrected by the live state out.
Live = Callable[[list[SiteView], list[str]], Refreshed]


@dataclass(frozen=True)
class LiveReader:
    """Refreshes for a plan (the CLI's ``--refresh``, ``POST /plans?refresh=true``,
    ``Provisioner.plan(refresh=True)``) with the settings' API, accounts and quota."""

    settings: Settings
    store: JobStore
    on_wait: Callable[[str], None] = lambda _: None

    def of(self, account: str) -> Live:
        """The refresh of ``account``'s sites, read through its quota at bulk priority."""

        def live(views: list[SiteView], domains: list[str]) -> Refreshed:
            from worker.runtime import make_accounts, make_limiter

            settings = self.settings
            chosen = make_accounts(settings).get(account)
            with PlausibleClient(
                base_url=settings.plausible_base_url,
                api_key=chosen.api_key().get_secret_value(),
                connect_timeout=settings.http_connect_timeout,
                read_timeout=settings.http_read_timeout,
                total_timeout=settings.http_total_timeout,
                hour_seconds=settings.hour_seconds,
            ) as client:
                return refresh(
                    views,
                    domains,
                    client=client,
                    account=chosen,
                    limiter=make_limiter(settings, self.store),
                    policy=RetryPolicy.from_settings(settings),
                    on_wait=self.on_wait,
                )

        return live


def refresh(
    views: Sequence[SiteView],
    domains: Sequence[str],
    *,
    client: PlausibleClient,
    account: Account,
    limiter: Limiter,
    policy: RetryPolicy,
    on_wait: Callable[[str], None] = lambda _: None,
) -> Refreshed:
    """Read ``domains`` (those of ``views`` the inventory holds) live; a site gone from Plausible
    leaves the views, so the plan creates it again."""
    known = {view.site.domain: view for view in views}
    wanted = [domain for domain in domains if domain in known]
    left = [3 * len(wanted)]
    gate = _Counted(
        JobPermits(limiter, account.quota, Priority.bulk, {}, needed=lambda: max(1, left[0]))
    )
    bound = client.using(gate)
    out = Refreshed([view for view in views if view.site.domain not in wanted])

    def read(fn: Callable[[], T]) -> T:
        while True:
            try:
                result = policy.call(fn)
            except QuotaWait as wait:
                on_wait(str(wait))
                time.sleep(max(0.0, wait.retry_at - limiter.clock()))
                continue
            left[0] -= 1
            return result

    try:
        for domain in wanted:
            view = known[domain]
            try:
                site = read(lambda domain=domain: bound.get_site(domain))  # type: ignore[misc]
            except NotFoundError:
                out.drift.append(f"site {domain}: in the inventory, gone from Plausible")
                continue
            goals = read(lambda domain=domain: list(bound.list_goals(domain)))  # type: ignore[misc]
            guests = read(lambda domain=domain: list(bound.list_guests(domain)))  # type: ignore[misc]
            corrected = _corrected(
                view, site.timezone, site.custom_properties, goals, guests, out.drift
            )
            out.views.append(_tracked(corrected, tracker_record(site), out.drift))
    finally:
        gate.permits.release()
    out.calls = gate.calls
    return out


def _corrected(
    view: SiteView,
    timezone: str,
    props: Sequence[str],
    goals: Sequence[Goal],
    guests: Sequence[Guest],
    drift: list[str],
) -> SiteView:
    """The inventory's view less what is gone live, with the live timezone, goals' ids, display
    names and custom properties, and guest roles. What is live but unknown to the inventory is drift only: the plan
    ensures it as if it were not there (find-or-create), so the inventory learns it."""
    domain = view.site.domain
    if timezone != view.site.timezone:
        drift.append(
            f"site {domain}: timezone {view.site.timezone} in the inventory, {timezone} live"
        )
    live = {_key(goal): goal for goal in goals}
    by_id = {goal.id: goal for goal in goals}
    kept: list[SiteGoalRow] = []
    for mine in view.goals:
        # By id first: Plausible may hold two goals of one event, apart by custom properties.
        goal = by_id.get(mine.goal_id) or live.get(mine.natural_key)
        if goal is None:
            drift.append(f"goal {domain} {mine.natural_key}: in the inventory, gone from Plausible")
            continue
        live_props = dict(goal.custom_props)
        if (mine.goal_id, mine.display_name) != (goal.id, goal.display_name):
            drift.append(f"goal {domain} {mine.natural_key}: changed since recorded")
        if mine.custom_props != live_props:
            drift.append(
                f"goal {domain} {mine.natural_key}: custom props "
                f"{json.dumps(mine.custom_props)} recorded, {json.dumps(live_props)} live"
            )
        update = {"goal_id": goal.id, "display_name": goal.display_name, "custom_props": live_props}
        kept.append(mine.model_copy(update=update))
    drift += [
        f"goal {domain} {key}: live, not in the inventory (made elsewhere)"
        for key in live
        if key not in {goal.natural_key for goal in view.goals}
    ]
    kept_props = [prop for prop in view.props if prop.name in props]
    drift += [
        f"custom property {domain} {prop.name}: in the inventory, gone from Plausible"
        for prop in view.props
        if prop.name not in props
    ]
    roles = {guest.email: guest.role for guest in guests}
    kept_guests: list[SiteGuestRow] = []
    for mine_guest in view.guests:
        role = roles.get(mine_guest.email)
        if role is None:
            drift.append(
                f"guest {domain} {mine_guest.email}: in the inventory, gone from Plausible"
            )
            continue
        if role != mine_guest.role:
            drift.append(
                f"guest {domain} {mine_guest.email}: role {mine_guest.role} recorded, {role} live"
            )
        kept_guests.append(mine_guest.model_copy(update={"role": role}))
    site = view.site.model_copy(update={"timezone": timezone})
    return replace(view, site=site, goals=kept, props=kept_props, guests=kept_guests)


def _tracked(view: SiteView, live: dict[str, Any], drift: list[str]) -> SiteView:
    """The view with the live tracker configuration; a setting the inventory records that
    differs live is drift."""
    domain, recorded = view.site.domain, view.site.tracker
    if recorded is not None:
        drift += [
            f"site {domain}: tracker {name} {json.dumps(value)} recorded, "
            f"{json.dumps(live.get(name))} live"
            for name, value in recorded.items()
            if live.get(name) != value
        ]
    return replace(view, site=view.site.model_copy(update={"tracker": live}))


def _key(goal: Goal) -> str:
    return f"event:{goal.event_name}" if goal.goal_type == "event" else f"page:{goal.page_path}"
