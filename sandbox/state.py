"""The sandbox's in-memory world: teams, keys, sites, goals and the runtime settings."""

from __future__ import annotations

import dataclasses
import math
import random
import re
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

import plausible_rules as rules

FEATURES = frozenset({"SitesAPI", "StatsAPI", "SharedLinks", "Props", "RevenueGoals"})
ROLES = frozenset({"owner", "admin", "editor", "viewer", "billing"})
GUEST_ROLES = frozenset({"viewer", "editor"})
#: A trial has every feature but SitesAPI (and SSO, which the sandbox does not model).
TRIAL_FEATURES = FEATURES - {"SitesAPI"}
TRIAL_SITE_LIMIT = 10
PERSONAL_TEAM_NAME = "My personal sites"
SITES_API_SCOPE = "sites:provision:*"
STATS_API_SCOPE = "stats:read:*"
TRACKER_BOOLEANS = rules.TRACKER_BOOLEANS
NANOID_ALPHABET = "_-" + string.digits + string.ascii_letters
OLD_DOMAIN_SECONDS = 72 * 3600
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass
class Settings:
    """Knobs that ``POST /_sandbox/config`` may change at runtime."""

    hourly_limit: int = 600
    #: ``legacy_per_user_hourly_request_limit``: the bucket of a legacy key's user (§4).
    legacy_hourly_limit: int = 600
    burst_limit: int = 60
    burst_seconds: float = 10
    hour_seconds: float = 3600
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    latency_ms: float = 0.0
    max_goals_per_site: int = 1000
    #: How far the sandbox's clock runs ahead of the host's (negative: behind), for testing a
    #: client's tolerance of the gap between its clock and Plausible's.
    clock_offset_ms: float = 0.0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes``; raise ValueError naming the first bad setting, changing nothing."""
        known = {f.name: f.type for f in dataclasses.fields(self)}
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting: {name}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            wants_int = known[name] == "int"
            negative_ok = name == "clock_offset_ms"
            if (
                (wants_int and value != int(value))
                or (value < 0 and not negative_ok)
                or not math.isfinite(value)
            ):
                raise ValueError(f"{name} is out of range")
            if name.endswith("_rate") and value > 1:
                raise ValueError(f"{name} must be between 0 and 1")
            if name in ("burst_seconds", "hour_seconds") and value <= 0:
                raise ValueError(f"{name} must be positive")
            checked[name] = int(value) if wants_int else float(value)
        for name, value in checked.items():
            setattr(self, name, value)


@dataclass
class Team:
    id: int
    identifier: str
    name: str
    features: set[str]
    locked: bool = False
    site_limit: int | None = None
    hourly_limit: int | None = None
    setup: bool = True


@dataclass
class User:
    id: int
    name: str
    email: str


@dataclass
class ApiKey:
    """A team-scoped key (``team_id`` set) or a legacy key (``team_id`` None), owned by a user."""

    key: str
    team_id: int | None
    user_id: int
    scopes: list[str]


@dataclass
class Goal:
    id: int
    site_id: int
    event_name: str | None
    page_path: str | None
    scroll_threshold: int
    display_name: str
    custom_props: dict[str, str]
    currency: str | None = None

    @property
    def goal_type(self) -> str:
        if self.event_name is not None:
            return "event"
        return "scroll" if self.scroll_threshold > -1 else "page"


@dataclass
class Guest:
    id: int
    email: str
    role: str
    status: str = "invited"


@dataclass
class Site:
    id: int
    domain: str
    timezone: str
    team_id: int
    tracker: dict[str, Any]
    custom_props: list[str] = field(default_factory=list)
    shared_links: dict[str, str] = field(default_factory=dict)
    guests: list[Guest] = field(default_factory=list)
    domain_changed_from: str | None = None
    domain_changed_at: float | None = None
    consolidated: bool = False
    #: When it was created, by the sandbox's clock (0 for sites placed through the admin route).
    inserted_at: float = 0.0


class RateLimiter:
    """Fixed windows aligned to ``floor(now / window)``: increment first, allow while count <= limit."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], tuple[int, int]] = {}

    def hit(self, bucket: str, kind: str, now: float, window: float, limit: int) -> bool:
        index = math.floor(now / window)
        current, count = self._windows.get((bucket, kind), (index, 0))
        count = count + 1 if current == index else 1
        self._windows[(bucket, kind)] = (index, count)
        return count <= limit

    def clear(self) -> None:
        self._windows.clear()


@dataclass
class World:
    """Everything the API remembers. ``reset`` keeps only the teams and keys given at start."""

    rng: random.Random
    teams: dict[int, Team] = field(default_factory=dict)
    keys: dict[str, ApiKey] = field(default_factory=dict)
    users: dict[int, User] = field(default_factory=dict)
    users_by_name: dict[str, User] = field(default_factory=dict)
    #: (user id, team id) -> team role.
    memberships: dict[tuple[int, int], str] = field(default_factory=dict)
    sites: dict[int, Site] = field(default_factory=dict)
    goals: dict[int, Goal] = field(default_factory=dict)
    next_id: int = 1

    def new_id(self) -> int:
        value = self.next_id
        self.next_id += 1
        return value

    def nanoid(self, size: int = 21) -> str:
        return "".join(self.rng.choice(NANOID_ALPHABET) for _ in range(size))

    def add_team(self, name: str, features: set[str], **options: Any) -> Team:
        identifier = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        team = Team(
            id=self.new_id(), identifier=identifier, name=name, features=features, **options
        )
        self.teams[team.id] = team
        return team

    def add_user(self, name: str | None = None) -> User:
        """The user called ``name``, created on demand; an anonymous new user without a name."""
        if name is not None and name in self.users_by_name:
            return self.users_by_name[name]
        user_id = self.new_id()
        name = name or f"user{user_id}"
        user = User(user_id, name, name if "@" in name else f"{name}@sandbox.test")
        self.users[user_id] = user
        self.users_by_name[name] = user
        return user

    def add_key(
        self, key: str, team: Team | None, role: str, scopes: list[str], user: User | None = None
    ) -> ApiKey:
        """A key of ``user`` (a new one by default); with a team, ``role`` is the user's role there."""
        user = user or self.add_user()
        if team is not None:
            self.memberships[(user.id, team.id)] = role
        api_key = ApiKey(key, None if team is None else team.id, user.id, scopes)
        self.keys[key] = api_key
        return api_key

    def team_role(self, user_id: int, team_id: int) -> str | None:
        return self.memberships.get((user_id, team_id))

    def guest_role(self, user_id: int, site: Site) -> str | None:
        email = self.users[user_id].email
        return next(
            (g.role for g in site.guests if g.status == "accepted" and g.email == email), None
        )

    def site_role(self, user_id: int, site: Site) -> str | None:
        """The guest role on ``site`` if the user is its guest, else the team role (§7.0)."""
        if site.guests:
            guest = self.guest_role(user_id, site)
            if guest is not None:
                return guest
        return self.memberships.get((user_id, site.team_id))

    def member_emails(self, team_id: int) -> set[str]:
        return {self.users[u].email for (u, t) in self.memberships if t == team_id}

    def team_by_param(self, value: object) -> Team | None:
        """``team_id`` as the plug reads it: a UUID identifier, or a JSON integer internal id."""
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return self.teams.get(value)
        if isinstance(value, str) and _UUID.fullmatch(value):
            # Ecto.UUID casts the hyphenated form, any case, to lowercase.
            return self.team_by_identifier(value.lower())
        return None

    def owned_personal_teams(self, user_id: int) -> list[Team]:
        """Teams the user owns that are not set up (personal teams), oldest first."""
        return [
            t
            for t in sorted(self.teams.values(), key=lambda t: t.id)
            if not t.setup and self.memberships.get((user_id, t.id)) == "owner"
        ]

    def create_personal_team(self, user: User) -> Team:
        """``Teams.get_or_create``'s new team: not set up, on a trial, owned by ``user``."""
        team = self.add_team(
            PERSONAL_TEAM_NAME, set(TRIAL_FEATURES), site_limit=TRIAL_SITE_LIMIT, setup=False
        )
        self.memberships[(user.id, team.id)] = "owner"
        return team

    def team_by_identifier(self, identifier: str) -> Team | None:
        return next((t for t in self.teams.values() if t.identifier == identifier), None)

    def find_site(self, site_id: str, now: float) -> Site | None:
        """The site whose domain, or whose old domain changed under 72 h ago, is ``site_id``."""
        for site in self.sites.values():
            if site.domain == site_id:
                return site
        for site in self.sites.values():
            if site.domain_changed_from == site_id and not self.old_domain_expired(site, now):
                return site
        return None

    @staticmethod
    def old_domain_expired(site: Site, now: float) -> bool:
        return site.domain_changed_at is None or now - site.domain_changed_at >= OLD_DOMAIN_SECONDS

    def site_goals(self, site: Site) -> list[Goal]:
        return [g for g in self.goals.values() if g.site_id == site.id]
