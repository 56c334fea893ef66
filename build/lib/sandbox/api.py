"""``SandboxAPI``: a Plausible-compatible Sites API as a plain object, request in, response out.

It holds every piece of state in memory and does no I/O; ``sandbox.server`` serves it over
HTTP. API requests run, in Plausible's order: fault injection, body parsing (400), routing
(404), ``Accept`` (406), the auth plug (§3 with the §4 rate limits), then the route itself.

Admin routes, outside ``/api``, never faulted, never rate limited, not counted:

- ``GET /_sandbox/health`` → ``{"status": "ok"}``.
- ``GET /_sandbox/requests?since=T`` → ``{"requests": [[t, status, bucket], ...]}``: every API
  request answered (dropped ones included) at sandbox time ``t`` >= T, with the rate-limit
  bucket it counted in (null when it counted in none); the newest 500,000 are kept.
- ``GET /_sandbox/state`` → teams, keys (6-character prefixes only, with their user and, for
  team-scoped keys, team and role), users (name, email, team roles), sites (domain, timezone,
  team, consolidated, tracker config, custom props, shared links, guests, old domain), goals,
  settings and request counters ``{"total", "by_status", "dropped", "failed_injected",
  "rate_limited"}``.
- ``POST /_sandbox/reset`` → forget sites, goals, counters, rate windows and the teams, users and
  keys added at runtime; restore the start-up settings and re-seed the random source.
- ``POST /_sandbox/config`` with a JSON object of any of ``fail_rate``, ``drop_rate``,
  ``latency_ms``, ``hourly_limit`` (a team's default), ``legacy_hourly_limit`` (a legacy key's
  per-user bucket), ``burst_limit``, ``burst_seconds``, ``hour_seconds``, ``max_goals_per_site``,
  ``clock_offset_ms`` (the sandbox's clock minus the host's; it may be negative) → the new
  settings.
- ``POST /_sandbox/teams`` with ``{"name", "features": [SitesAPI, StatsAPI, SharedLinks, Props,
  RevenueGoals], "locked", "site_limit", "hourly_limit", "setup"}`` → the team with its ``id``
  (UUID) and ``internal_id`` (the integer a JSON ``team_id`` is looked up by).
- ``POST /_sandbox/keys`` with ``{"key", "team": <team id>, "role": owner|admin|editor|viewer|
  billing, "scopes": [...], "user"?}`` → a team-scoped key: ``{"team", "legacy": false, "user",
  "role", "scopes"}``. The default team is used when ``team`` is omitted, ``["sites:provision:*"]``
  is the default scope. ``user`` names the key's user (created on demand; a new anonymous user
  by default); ``role`` becomes that user's role in the team (default: their current role, else
  ``owner``).
- ``POST /_sandbox/keys`` with ``{"key", "legacy": true, "user", "scopes"?}`` → a legacy key
  (no team, §1) of the named user, created on demand with no memberships.
- ``POST /_sandbox/memberships`` with ``{"user", "team": <team id>, "role": owner|admin|editor|
  viewer|billing}`` sets the user's team role; with ``{"user", "site": <domain>, "role":
  viewer|editor}`` it makes the user an accepted guest of that site instead. Users are created
  on demand. → ``{"user", "team"|"site", "role", "guest"}``.
- ``POST /_sandbox/sites`` with ``{"domain", "team": <team id>, "timezone"?, "consolidated"?:
  bool, "domain_changed_from"?: str}`` → the site, placed as if made in Plausible's UI: the
  domain is normalised and validated, but no key, role, feature, lock or site limit is checked.
  An old domain stays usable for 72 hours from now; a consolidated view answers every
  site-context route with 400 and is never listed.

Admin errors are ``400 {"error": "..."}``.
"""

from __future__ import annotations

import copy
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from sandbox import resources, sites
from sandbox.access import authorize
from sandbox.admin import admin_route
from sandbox.http import Call, Reply, Request, Response, error, framework_error, json_response
from sandbox.params import (
    MalformedRequestError,
    accepts_json,
    decode_body,
    decode_form,
    percent_decode,
)
from sandbox.state import FEATURES, SITES_API_SCOPE, RateLimiter, Settings, World

Handler = Callable[[Call], dict[str, Any]]
REQUEST_LOG_SIZE = 500_000


class SandboxAPI:
    """The Sites API. ``clock`` gives the host's seconds since the epoch (``now()`` adds the
    configured offset: the sandbox's own time); ``rng`` drives ids and faults."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        seed: int | None = None,
        base_url: str = "http://127.0.0.1:8000",
    ) -> None:
        self.settings = settings or Settings()
        self.clock = clock
        self.seed = seed
        self.rng = rng or random.Random(seed)
        self.base_url = base_url
        self.world = World(self.rng)
        self.limiter = RateLimiter()
        self.counters: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.requests: deque[tuple[float, int, str | None]] = deque(maxlen=REQUEST_LOG_SIZE)
        #: The rate-limit bucket the request being handled counted in (set by the auth plug).
        self.bucket: str | None = None
        self._initial_settings = copy.copy(self.settings)
        self._initial_world: World | None = None

    # -- set-up --------------------------------------------------------------------------

    def add_team(self, name: str, features: set[str] | None = None, **options: Any) -> str:
        """Create a team and return its identifier (UUID)."""
        return self.world.add_team(
            name, set(FEATURES if features is None else features), **options
        ).identifier

    def add_key(
        self, key: str, team: str, role: str = "owner", scopes: list[str] | None = None
    ) -> None:
        found = self.world.team_by_identifier(team)
        if found is None:
            raise ValueError(f"unknown team: {team}")
        self.world.add_key(key, found, role, scopes or [SITES_API_SCOPE])

    def freeze_initial_state(self) -> None:
        """Remember the teams and keys present now; ``reset`` comes back to them."""
        self._initial_world = copy.deepcopy(self.world)
        self._initial_settings = copy.copy(self.settings)

    def reset(self) -> None:
        if self.seed is not None:
            self.rng.seed(self.seed)
        if self._initial_world is None:
            self.world = World(self.rng)
        else:
            self.world = copy.deepcopy(self._initial_world)
            self.world.rng = self.rng
        self.settings = copy.copy(self._initial_settings)
        self.limiter.clear()
        self.counters.clear()
        self.by_status.clear()
        self.requests.clear()

    def counters_snapshot(self) -> dict[str, Any]:
        return {
            "total": self.counters["total"],
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "dropped": self.counters["dropped"],
            "failed_injected": self.counters["failed_injected"],
            "rate_limited": self.counters["rate_limited"],
        }

    def now(self) -> float:
        """The sandbox's time: the host's plus ``clock_offset_ms``."""
        return self.clock() + self.settings.clock_offset_ms / 1000

    # -- requests ------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/_sandbox/"):
            return admin_route(self, request)
        self.counters["total"] += 1
        self.bucket = None
        at = self.now()
        settings = self.settings
        if settings.fail_rate and self.rng.random() < settings.fail_rate:
            self.counters["failed_injected"] += 1
            response = error(500, "internal server error").response
        else:
            try:
                response = json_response(200, self._dispatch(request))
            except Reply as reply:
                response = reply.response
            if settings.drop_rate and self.rng.random() < settings.drop_rate:
                self.counters["dropped"] += 1
                response.drop = True
        if response.status == 429:
            self.counters["rate_limited"] += 1
        if not response.drop:
            self.by_status[response.status] += 1
        self.requests.append((at, response.status, self.bucket))
        response.delay_seconds = settings.latency_ms / 1000
        return response

    def _dispatch(self, request: Request) -> dict[str, Any]:
        try:
            query = decode_form(request.query)
            body = decode_body(request.method, request.header("content-type") or "", request.body)
        except MalformedRequestError:
            raise framework_error(400) from None
        handler, path_params, scope, site_context = self._route(request.method, request.path)
        params = {**query, **body, **path_params}
        if not accepts_json(request.header("accept")):
            raise framework_error(406)
        return handler(authorize(self, request, params, scope, site_context))

    def _route(self, method: str, path: str) -> tuple[Handler, dict[str, Any], str, bool]:
        """Phoenix's router: literal segments before ``/:site_id``; path segments decoded."""
        segments = [s for s in path.split("/") if s]
        if segments[:3] != ["api", "v1", "sites"]:
            raise framework_error(404)
        rest = segments[3:]
        try:
            decoded = [percent_decode(s, plus_as_space=False) for s in rest]
        except MalformedRequestError:
            raise framework_error(400) from None
        read, write = "sites:read:*", SITES_API_SCOPE
        method = "GET" if method == "HEAD" else method
        head = rest[0] if rest else None
        if not rest:
            if method == "GET":
                return sites.list_sites, {}, read, False
            if method == "POST":
                return sites.create_site, {}, write, False
        elif len(rest) == 1:
            literal: dict[tuple[str, str | None], Handler] = {
                ("GET", "teams"): sites.list_teams,
                ("GET", "goals"): resources.list_goals,
                ("GET", "custom-props"): resources.list_custom_props,
                ("GET", "guests"): resources.list_guests,
                ("PUT", "shared-links"): resources.find_or_create_shared_link,
                ("PUT", "goals"): resources.find_or_create_goal,
                ("PUT", "custom-props"): resources.add_custom_prop,
                ("PUT", "guests"): resources.find_or_create_guest,
                ("DELETE", "custom-props"): resources.delete_custom_prop,
            }
            if (method, head) in literal:
                scope = read if method == "GET" else write
                extra: dict[str, Any] = (
                    {"property": []} if head == "custom-props" and method == "DELETE" else {}
                )
                return literal[(method, head)], extra, scope, head != "teams"
            by_site: dict[str, Handler] = {
                "GET": sites.get_site,
                "PUT": sites.update_site,
                "DELETE": sites.delete_site,
            }
            if method in by_site:
                return (
                    by_site[method],
                    {"site_id": decoded[0]},
                    read if method == "GET" else write,
                    True,
                )
        elif method == "DELETE" and head == "custom-props":
            return resources.delete_custom_prop, {"property": decoded[1:]}, write, True
        elif method == "DELETE" and len(rest) == 2 and head == "goals":
            return resources.delete_goal, {"goal_id": decoded[1]}, write, True
        elif method == "DELETE" and len(rest) == 2 and head == "guests":
            return resources.delete_guest, {"email": decoded[1]}, write, True
        raise framework_error(404)
