"""The inventory: what the provisioner knows it owns in Plausible, per account.

Kept apart from the jobs that made it, so it outlives them (retention never prunes it) and can
be reconciled against. The pipeline's checkpoints write it in their own transaction
(``changes``, run by ``Claims``), so it never disagrees with a finished job: a site created or
adopted, each goal (with its custom properties, as Plausible answered) and shared link ensured, the tracker configuration set, and what a delete
removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, delete, or_, update
from sqlmodel import Session, col, select

from worker.jobs.db import table_of, upsert
from worker.jobs.models import SiteGoalRow, SiteGuestRow, SiteLinkRow, SitePropRow, SiteRow
from worker.jobs.specs import JobRequest, Progress
from worker.jobs.states import Operation
from worker.jobs.table import Change, Table

#: A row of what a site holds (a goal, a link, a property, a guest).
_Owned = TypeVar("_Owned", SiteGoalRow, SiteLinkRow, SitePropRow, SiteGuestRow)


def changes(
    dialect: str,
    request: JobRequest,
    job_id: str,
    before: Progress,
    after: Progress,
    now: datetime,
) -> list[Change]:
    """What recording ``after`` (a job's progress, last recorded as ``before``) changes in the
    inventory."""
    account = request.account
    if request.operation is Operation.provision_site:
        return _provisioned(dialect, request, job_id, before, after, now) + _tracker(
            request, before, after
        )
    if request.operation is Operation.set_tracker:
        return _tracker(request, before, after)
    gone = after.deleted or after.already_gone
    if not gone or (before.deleted or before.already_gone):
        return []
    if request.operation is Operation.delete_site:
        return [
            (delete(table).where(*_of_site(table, account, request.domain)), None)
            for table in (SiteGuestRow, SitePropRow, SiteLinkRow, SiteGoalRow, SiteRow)
        ]
    if request.operation is Operation.delete_prop:
        where = (
            *_of_site(SitePropRow, account, request.domain),
            col(SitePropRow.name) == request.custom_prop,
        )
        return [(delete(SitePropRow).where(*where), None)]
    if request.operation is Operation.delete_guest:
        where = (
            *_of_site(SiteGuestRow, account, request.domain),
            col(SiteGuestRow.email) == request.email,
        )
        return [(delete(SiteGuestRow).where(*where), None)]
    goal_id = after.goal_id if after.goal_id is not None else request.goal_id
    if goal_id is None:
        return []
    where = (*_of_site(SiteGoalRow, account, request.domain), col(SiteGoalRow.goal_id) == goal_id)
    return [(delete(SiteGoalRow).where(*where), None)]


def _provisioned(
    dialect: str, request: JobRequest, job_id: str, before: Progress, after: Progress, now: datetime
) -> list[Change]:
    """A set's job marks what it records first as the set's (kept by later upserts); a site in
    the account before the job never is."""
    account = request.account
    site = after.site
    if site is None:
        return []
    out: list[Change] = []
    if before.site != site:
        origin = "existed" if site.existed else "adopted" if site.adopted else "created"
        row = {
            "account": account,
            "domain": site.domain,
            "timezone": site.timezone,
            "origin": origin,
            "job_id": job_id,
            "managed_set": None if origin == "existed" else request.managed_set,
            "created_at": now,
            "confirmed_at": now,
        }
        # A site already recorded keeps where it came from; it is confirmed anew.
        keys = ["account", "domain"]
        out.append((upsert(table_of(SiteRow), dialect, keys, ["timezone", "confirmed_at"]), row))
    goals = [
        {
            "account": account,
            "domain": site.domain,
            "natural_key": key,
            "goal_id": goal.id,
            "goal_type": goal.goal_type,
            "event_name": goal.event_name,
            "page_path": goal.page_path,
            "display_name": goal.display_name,
            "custom_props": goal.custom_props,
            "job_id": job_id,
            "managed_set": request.managed_set,
            "confirmed_at": now,
        }
        for key, goal in after.goals.items()
        if before.goals.get(key) != goal
    ]
    if goals:
        keys = ["account", "domain", "natural_key"]
        # Every column but the key's and the set's (kept as the job that first recorded it).
        fields = [name for name in goals[0] if name not in {*keys, "managed_set"}]
        stmt = upsert(table_of(SiteGoalRow), dialect, keys, fields)
        out += [(stmt, goal) for goal in goals]
    links = [
        {
            "account": account,
            "domain": site.domain,
            "name": name,
            "url": url,
            "job_id": job_id,
            "confirmed_at": now,
        }
        for name, url in after.shared_links.items()
        if before.shared_links.get(name) != url
    ]
    if links:
        keys = ["account", "domain", "name"]
        stmt = upsert(table_of(SiteLinkRow), dialect, keys, ["url", "job_id", "confirmed_at"])
        out += [(stmt, link) for link in links]
    common = {"account": account, "domain": site.domain, "job_id": job_id, "confirmed_at": now}
    props = [
        {**common, "name": name, "managed_set": request.managed_set}
        for name in after.custom_props
        if name not in before.custom_props
    ]
    if props:
        keys = ["account", "domain", "name"]
        stmt = upsert(table_of(SitePropRow), dialect, keys, ["job_id", "confirmed_at"])
        out += [(stmt, prop) for prop in props]
    guests = [
        {**common, "email": email, "role": role, "managed_set": request.managed_set}
        for email, role in after.guests.items()
        if before.guests.get(email) != role
    ]
    if guests:
        keys = ["account", "domain", "email"]
        stmt = upsert(table_of(SiteGuestRow), dialect, keys, ["role", "job_id", "confirmed_at"])
        out += [(stmt, guest) for guest in guests]
    return out


def _tracker(request: JobRequest, before: Progress, after: Progress) -> list[Change]:
    """The tracker configuration Plausible answered, on the site's row (a site the inventory
    does not hold gains nothing)."""
    if after.tracker is None or after.tracker == before.tracker:
        return []
    domain = after.site.domain if after.site is not None else request.domain
    stmt = (
        update(SiteRow)
        .where(*_of_site(SiteRow, request.account, domain))
        .values(tracker=after.tracker)
    )
    return [(stmt, None)]


def _of_site(table: Any, account: str, domain: str) -> tuple[Any, Any]:
    return col(table.account) == account, col(table.domain) == domain


@dataclass(frozen=True)
class SiteView:
    """A site of the inventory with its goals, shared links, custom properties and guests."""

    site: SiteRow
    goals: list[SiteGoalRow]
    links: list[SiteLinkRow]
    props: list[SitePropRow] = field(default_factory=list)
    guests: list[SiteGuestRow] = field(default_factory=list)


class Inventory(Table):
    """What readers may know of the inventory."""

    def sites(
        self,
        accounts: Sequence[str] | None = None,
        *,
        limit: int = 100,
        after: tuple[str, str] | None = None,
    ) -> list[SiteRow]:
        """Sites by domain (then account), ``limit`` at a time after ``(domain, account)``; of
        ``accounts`` only, if given."""
        t = SiteRow
        query = select(t)
        if accounts is not None:
            query = query.where(col(t.account).in_(list(accounts)))
        if after is not None:
            domain, account = after
            query = query.where(
                or_(
                    col(t.domain) > domain,
                    and_(col(t.domain) == domain, col(t.account) > account),
                )
            )
        query = query.order_by(col(t.domain), col(t.account)).limit(limit)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.exec(query).all())

    def site(self, domain: str, accounts: Sequence[str] | None = None) -> list[SiteView]:
        """The site ``domain`` (one per account that has it), with its goals and links."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(SiteRow).where(col(SiteRow.domain) == domain)
            if accounts is not None:
                query = query.where(col(SiteRow.account).in_(list(accounts)))
            found = list(session.exec(query.order_by(col(SiteRow.account))).all())
            return [self._view(session, site) for site in found]

    def details(self, sites: Sequence[SiteRow]) -> list[SiteView]:
        """``sites`` with their goals and links."""
        with Session(self.engine, expire_on_commit=False) as session:
            return [self._view(session, site) for site in sites]

    @staticmethod
    def _view(session: Session, site: SiteRow) -> SiteView:
        def of_site(model: type[_Owned], order: Any) -> list[_Owned]:
            where = _of_site(model, site.account, site.domain)
            return list(session.exec(select(model).where(*where).order_by(order)).all())

        return SiteView(
            site,
            of_site(SiteGoalRow, col(SiteGoalRow.natural_key)),
            of_site(SiteLinkRow, col(SiteLinkRow.name)),
            of_site(SitePropRow, col(SitePropRow.name)),
            of_site(SiteGuestRow, col(SiteGuestRow.email)),
        )
