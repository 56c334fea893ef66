"""The plan: the desired state compared with the inventory (no API call), as changes in
Terraform's notation and the jobs that make them.

- ``+`` create, ``-`` destroy, ``~`` change in place (a site's tracker script settings that
  differ from those the inventory records), ``-/+`` delete and create again (a goal whose display
  name or custom properties changed, a guest whose role changed: both are find-or-create, so
  changing one is a delete and a create; a guest is emailed a new invitation);
  ``!`` a difference the API cannot resolve, said plainly and left as is (a timezone).
- Shared links are ensure-only: Plausible has no route to list or delete them, so one missing
  from the file is never pruned and never reported.
- Prune removes only what the inventory records as created by this set (``managed_set``): from
  a site that leaves the file, what the set made on it (the site too, if the set made it). A
  destroyed site loses its data and its domain stays blocked for up to 48 hours: ``apply`` does
  it only with ``--allow-destroy``.

The jobs are the existing operations: a ``provision_site`` per site that gains anything (for a
site the inventory holds, its progress starts with the site done, so no create call is made),
a ``delete_goal`` by the goal's id, ``delete_prop``, ``delete_guest``, ``delete_site``, and a
``set_tracker`` for an existing site whose tracker settings change (a new site's are sent with
its create, at no extra call). Tracker settings that leave the file are left as they are.
Re-creating a replaced goal or guest is phase 2: enqueued once the phase-1 delete is done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import plausible_rules as rules
from producers.plans.desired import DesiredSite, DesiredState
from worker.jobs.inventory import SiteView
from worker.jobs.specs import GoalSpec, GuestSpec, JobRequest, Progress, SiteRecord, calls_needed
from worker.jobs.states import Operation

Action = Literal["create", "destroy", "change", "replace", "impossible"]
SYMBOLS: dict[Action, str] = {
    "create": "+",
    "destroy": "-",
    "change": "~",
    "replace": "-/+",
    "impossible": "!",
}
PLURALS = {
    "site": "sites",
    "goal": "goals",
    "shared link": "shared links",
    "custom property": "custom properties",
    "guest": "guests",
    "tracker configuration": "tracker configurations",
}
INVITE = "Plausible emails an invitation"
DESTROY_WARNING = (
    "the site's data is lost, and the domain cannot be registered again for up to 48 hours; "
    "apply needs --allow-destroy"
)


@dataclass(frozen=True)
class Change:
    """One resource's change. ``kind``: a key of ``PLURALS``, or ``timezone``."""

    action: Action
    kind: str
    domain: str
    name: str
    detail: str = ""

    def line(self) -> str:
        label = self.domain if self.kind == "site" else self.name
        text = f"{SYMBOLS[self.action]} {self.kind} {label}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True)
class PlannedJob:
    """A job of the plan: ``resource`` names it within the plan (its idempotency key is derived
    from the plan and it); phase 2 waits for phase 1."""

    resource: str
    request: JobRequest
    progress: Progress | None = None
    phase: int = 1

    @property
    def calls(self) -> int:
        return calls_needed(self.request, self.progress or Progress())


@dataclass
class Plan:
    set: str
    account: str
    #: The domains the plan looked at (file and set, within ``--target``): the inventory's
    #: fingerprint covers these.
    domains: list[str]
    changes: list[Change] = field(default_factory=list)
    jobs: list[PlannedJob] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(job.calls for job in self.jobs)

    @property
    def has_changes(self) -> bool:
        return any(change.action != "impossible" for change in self.changes)

    @property
    def destroys_sites(self) -> list[str]:
        return [c.domain for c in self.changes if c.kind == "site" and c.action == "destroy"]

    def summary(self) -> str:
        """``Plan: 3 sites, 12 goals to add; 1 goal to destroy; 1 goal to replace.``"""
        if not self.has_changes:
            return "No changes. Plausible matches the file, as far as the inventory knows."
        parts = []
        verbs = (
            ("create", "add"),
            ("change", "change"),
            ("destroy", "destroy"),
            ("replace", "replace"),
        )
        for action, verb in verbs:
            counts: dict[str, int] = {}
            for change in self.changes:
                if change.action == action:
                    counts[change.kind] = counts.get(change.kind, 0) + 1
            if counts:
                things = ", ".join(
                    f"{n} {kind if n == 1 else PLURALS[kind]}"
                    for kind in PLURALS
                    if (n := counts.get(kind, 0))
                )
                parts.append(f"{things} to {verb}")
        return "Plan: " + "; ".join(parts) + "."

    def lines(self) -> list[str]:
        """The changes, by site in the plan's order, each site's own changes indented."""
        out: list[str] = []
        by_site: dict[str, list[Change]] = {}
        for change in self.changes:
            by_site.setdefault(change.domain, []).append(change)
        for domain, changes in by_site.items():
            head = next((c for c in changes if c.kind == "site"), None)
            out.append(head.line() if head else f"~ site {domain}")
            out += [f"    {c.line()}" for c in changes if c is not head]
        return out

    def identity(self, fingerprint: str) -> str:
        """The same plan of the same inventory has the same identity (and so the same keys)."""
        data = {
            "set": self.set,
            "account": self.account,
            "inventory": fingerprint,
            "jobs": [
                [job.resource, job.phase, job.request.model_dump(mode="json")] for job in self.jobs
            ],
        }
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def make_plan(
    desired: DesiredState, inventory: Iterable[SiteView], targets: Collection[str] = ()
) -> Plan:
    """Compare ``desired`` with the account's ``inventory``; only ``targets`` (domains), if
    any."""
    known = {view.site.domain: view for view in inventory if view.site.account == desired.account}
    wanted = [site for site in desired.sites if not targets or site.domain in targets]
    owned = sorted(
        domain
        for domain, view in known.items()
        if view.site.managed_set == desired.set
        and desired.site(domain) is None
        and (not targets or domain in targets)
    )
    # Sites the file no longer has (or never had) that are not the set's but hold something it
    # made: those things are pruned, the site is left.
    partly = sorted(
        domain
        for domain, view in known.items()
        if view.site.managed_set != desired.set
        and desired.site(domain) is None
        and (not targets or domain in targets)
        and desired.set
        in {
            *(goal.managed_set for goal in view.goals),
            *(prop.managed_set for prop in view.props),
            *(guest.managed_set for guest in view.guests),
        }
    )
    looked = {s.domain for s in wanted} | set(owned) | set(partly)
    plan = Plan(desired.set, desired.account, sorted(looked))
    for site in wanted:
        view = known.get(site.domain)
        if view is None:
            _create_site(plan, desired, site)
        else:
            _update_site(plan, desired, site, view)
    for domain in partly:
        _update_site(plan, desired, DesiredSite(domain, None, (), ()), known[domain])
    for domain in owned:
        plan.changes.append(Change("destroy", "site", domain, domain, DESTROY_WARNING))
        view = known[domain]
        plan.changes += [
            Change("destroy", kind, domain, name, "with the site")
            for kind, names in (
                ("goal", [goal.natural_key for goal in view.goals]),
                ("custom property", [prop.name for prop in view.props]),
                ("guest", [guest.email for guest in view.guests]),
            )
            for name in names
        ]
        plan.jobs.append(
            PlannedJob(
                f"delete-site:{domain}",
                JobRequest(
                    operation=Operation.delete_site,
                    domain=domain,
                    account=desired.account,
                    managed_set=desired.set,
                ),
            )
        )
    return plan


def _create_site(plan: Plan, desired: DesiredState, site: DesiredSite) -> None:
    timezone = site.timezone or "Etc/UTC"
    plan.changes.append(Change("create", "site", site.domain, site.domain, f"timezone {timezone}"))
    plan.changes += [
        Change("create", "goal", site.domain, goal.natural_key, _goal_detail(goal))
        for goal in site.goals
    ]
    plan.changes += [
        Change("create", "shared link", site.domain, name) for name in site.shared_links
    ]
    plan.changes += [
        Change("create", "custom property", site.domain, prop) for prop in site.custom_props
    ]
    plan.changes += [
        Change("create", "guest", site.domain, guest.email, f"{guest.role}; {INVITE}")
        for guest in site.guests
    ]
    if site.tracker is not None:
        shown = _settings(site.tracker, None)
        plan.changes.append(Change("create", "tracker configuration", site.domain, shown))
    request = _provision(desired, site.domain, site.goals, site.shared_links, site.timezone)
    request = request.model_copy(
        update={
            "custom_props": site.custom_props,
            "guests": site.guests,
            "tracker_script_configuration": site.tracker,
        }
    )
    plan.jobs.append(PlannedJob(f"provision:{site.domain}", request))


def _update_site(plan: Plan, desired: DesiredState, site: DesiredSite, view: SiteView) -> None:
    domain = site.domain
    changes: list[Change] = []
    if site.timezone is not None and site.timezone != view.site.timezone:
        changes.append(
            Change(
                "impossible",
                "timezone",
                domain,
                f"{view.site.timezone} -> {site.timezone}",
                "not possible through the API (Plausible's Sites API cannot change a site's "
                "timezone); left as is",
            )
        )
    changes += _tracker(plan, desired, site, view)
    # Goals, custom properties and guests follow the same rules (``+`` what only the file has;
    # ``-/+`` what differs, ``!`` when another set made it; ``-`` what the set made that left
    # the file), written out for each: what differs, what a change says and which job deletes
    # are each kind's own; one loop for the three took those as six parameters, all but the
    # delete job empty for a custom property (a name: nothing else to differ).
    goal_changes, add, again = _goals(plan, desired, site, view)
    changes += goal_changes
    links = {link.name for link in view.links}
    new_links = tuple(name for name in site.shared_links if name not in links)
    changes += [Change("create", "shared link", domain, name) for name in new_links]
    props = {prop.name: prop for prop in view.props}
    new_props = tuple(prop for prop in site.custom_props if prop not in props)
    changes += [Change("create", "custom property", domain, prop) for prop in new_props]
    for prop in view.props:
        if prop.name not in site.custom_props and prop.managed_set == desired.set:
            changes.append(Change("destroy", "custom property", domain, prop.name))
            request = _request(desired, Operation.delete_prop, domain, custom_prop=prop.name)
            plan.jobs.append(PlannedJob(f"delete-prop:{domain}:{prop.name}", request))
    guests = {guest.email: guest for guest in view.guests}
    new_guests: list[GuestSpec] = []
    again_guests: list[GuestSpec] = []
    for guest in site.guests:
        found_guest = guests.get(guest.email)
        if found_guest is None:
            new_guests.append(guest)
            changes.append(
                Change("create", "guest", domain, guest.email, f"{guest.role}; {INVITE}")
            )
        elif found_guest.role != guest.role:
            shown = f"role {found_guest.role} -> {guest.role}"
            if found_guest.managed_set != desired.set:
                changes.append(
                    Change(
                        "impossible",
                        "guest",
                        domain,
                        guest.email,
                        f"{shown}: not invited by set {desired.set!r}, so not replaced",
                    )
                )
                continue
            again_guests.append(guest)
            changes.append(
                Change("replace", "guest", domain, guest.email, f"{shown}; {INVITE} again")
            )
            request = _request(desired, Operation.delete_guest, domain, email=guest.email)
            plan.jobs.append(PlannedJob(f"delete-guest:{domain}:{guest.email}", request))
    wanted_guests = {guest.email for guest in site.guests}
    for found_guest in view.guests:
        if found_guest.email not in wanted_guests and found_guest.managed_set == desired.set:
            changes.append(Change("destroy", "guest", domain, found_guest.email))
            request = _request(desired, Operation.delete_guest, domain, email=found_guest.email)
            plan.jobs.append(PlannedJob(f"delete-guest:{domain}:{found_guest.email}", request))
    # The site is done already: its jobs start after the create step (no call for it).
    done = Progress(site=SiteRecord(domain=domain, timezone=view.site.timezone, existed=True))
    if add or new_links or new_props or new_guests:
        request = _provision(desired, domain, tuple(add), new_links, None).model_copy(
            update={"custom_props": new_props, "guests": tuple(new_guests)}
        )
        plan.jobs.append(PlannedJob(f"provision:{domain}", request, done))
    if again or again_guests:
        request = _provision(desired, domain, tuple(again), (), None).model_copy(
            update={"guests": tuple(again_guests)}
        )
        plan.jobs.append(PlannedJob(f"recreate:{domain}", request, done, phase=2))
    plan.changes += changes


def _goals(
    plan: Plan, desired: DesiredState, site: DesiredSite, view: SiteView
) -> tuple[list[Change], list[GoalSpec], list[GoalSpec]]:
    """The site's goal changes, the goals to add, and those to make again once the delete job
    this adds is done (a display name or custom properties that differ); the set's goals that
    left the file get a delete job."""
    domain = site.domain
    changes: list[Change] = []
    have = {goal.natural_key: goal for goal in view.goals}
    add: list[GoalSpec] = []
    again: list[GoalSpec] = []
    for goal in site.goals:
        found = have.get(goal.natural_key)
        if found is None:
            add.append(goal)
            changes.append(Change("create", "goal", domain, goal.natural_key, _goal_detail(goal)))
            continue
        shown = _goal_difference(found.display_name, found.custom_props, goal)
        if not shown:
            continue
        if found.managed_set != desired.set:
            changes.append(
                Change(
                    "impossible",
                    "goal",
                    domain,
                    goal.natural_key,
                    f"{shown}: not created by set {desired.set!r}, so not replaced",
                )
            )
            continue
        again.append(goal)
        changes.append(Change("replace", "goal", domain, goal.natural_key, shown))
        plan.jobs.append(_delete_goal(desired, domain, found.goal_id, goal.natural_key))
    wanted = {goal.natural_key for goal in site.goals}
    for found in view.goals:
        if found.natural_key not in wanted and found.managed_set == desired.set:
            changes.append(
                Change("destroy", "goal", domain, found.natural_key, f"#{found.goal_id}")
            )
            plan.jobs.append(_delete_goal(desired, domain, found.goal_id, found.natural_key))
    return changes, add, again


def _tracker(plan: Plan, desired: DesiredState, site: DesiredSite, view: SiteView) -> list[Change]:
    """A ``set_tracker`` job if the file's tracker settings differ from those recorded."""
    recorded = view.site.tracker
    if site.tracker is None or (
        recorded is not None and all(recorded.get(k) == v for k, v in site.tracker.items())
    ):
        return []
    request = _request(
        desired, Operation.set_tracker, site.domain, tracker_script_configuration=site.tracker
    )
    plan.jobs.append(PlannedJob(f"tracker:{site.domain}", request))
    shown = _settings(site.tracker, recorded)
    return [Change("change", "tracker configuration", site.domain, shown)]


def _provision(
    desired: DesiredState,
    domain: str,
    goals: tuple[GoalSpec, ...],
    links: tuple[str, ...],
    timezone: str | None,
) -> JobRequest:
    return JobRequest(
        operation=Operation.provision_site,
        domain=domain,
        timezone=timezone,
        goals=goals,
        shared_links=links,
        account=desired.account,
        managed_set=desired.set,
    )


def _delete_goal(desired: DesiredState, domain: str, goal_id: int, key: str) -> PlannedJob:
    request = _request(desired, Operation.delete_goal, domain, goal_id=goal_id)
    return PlannedJob(f"delete-goal:{domain}:{key}", request)


def _request(
    desired: DesiredState, operation: Operation, domain: str, **fields: object
) -> JobRequest:
    return JobRequest.model_validate(
        {
            "operation": operation,
            "domain": domain,
            "account": desired.account,
            "managed_set": desired.set,
            **fields,
        }
    )


def _display_name(goal: GoalSpec) -> str:
    return goal.display_name or rules.default_display_name(
        event_name=goal.event_name, page_path=goal.page_path
    )


def _settings(wanted: dict[str, Any], recorded: dict[str, Any] | None) -> str:
    """``outbound_links false -> true, file_downloads = true``: each setting that changes, from
    what the inventory records (``=``: nothing recorded)."""
    shown = []
    for name, value in wanted.items():
        if recorded is None or name not in recorded:
            shown.append(f"{name} = {json.dumps(value)}")
        elif recorded[name] != value:
            shown.append(f"{name} {json.dumps(recorded[name])} -> {json.dumps(value)}")
    return ", ".join(shown)


def _goal_difference(display_name: str, custom_props: dict[str, str], goal: GoalSpec) -> str:
    """``display name 'A' -> 'B', custom props {} -> {"plan": "pro"}``: what the inventory
    records of a goal that differs from ``goal``; empty if nothing does."""
    shown = []
    name = _display_name(goal)
    if display_name != name:
        shown.append(f"display name {display_name!r} -> {name!r}")
    if custom_props != goal.custom_props:
        shown.append(f"custom props {json.dumps(custom_props)} -> {json.dumps(goal.custom_props)}")
    return ", ".join(shown)


def _goal_detail(goal: GoalSpec) -> str:
    shown = [f"display name {goal.display_name!r}"] if goal.display_name else []
    if goal.custom_props:
        shown.append(f"custom props {json.dumps(goal.custom_props)}")
    return ", ".join(shown)
