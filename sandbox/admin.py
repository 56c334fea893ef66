"""The ``/_sandbox/*`` admin routes (documented in ``sandbox.api``)."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import plausible_rules as rules
from sandbox.http import Request, Response, json_response
from sandbox.params import decode_form
from sandbox.sites import domain_taken, new_tracker, site_response
from sandbox.state import FEATURES, GUEST_ROLES, ROLES, SITES_API_SCOPE, Guest, Site, Team, User

if TYPE_CHECKING:
    from sandbox.api import SandboxAPI


class AdminError(Exception):
    """A bad admin request: answered with 400 and the message."""


def admin_route(api: SandboxAPI, request: Request) -> Response:
    try:
        route = (request.method, request.path.rstrip("/"))
        if route == ("GET", "/_sandbox/health"):
            return json_response(200, {"status": "ok"})
        if route == ("GET", "/_sandbox/state"):
            return json_response(200, state(api))
        if route == ("GET", "/_sandbox/requests"):
            return json_response(200, {"requests": _requests(api, request.query)})
        if route == ("POST", "/_sandbox/reset"):
            api.reset()
            return json_response(200, {"reset": True})
        if route == ("POST", "/_sandbox/config"):
            try:
                api.settings.update(_payload(request))
            except ValueError as exc:
                raise AdminError(str(exc)) from None
            return json_response(200, dataclasses.asdict(api.settings))
        if route == ("POST", "/_sandbox/teams"):
            return json_response(200, _add_team(api, _payload(request)))
        if route == ("POST", "/_sandbox/keys"):
            return json_response(200, _add_key(api, _payload(request)))
        if route == ("POST", "/_sandbox/memberships"):
            return json_response(200, _add_membership(api, _payload(request)))
        if route == ("POST", "/_sandbox/sites"):
            return json_response(200, _add_site(api, _payload(request)))
    except AdminError as exc:
        return json_response(400, {"error": str(exc)})
    return json_response(404, {"message": "Not Found", "status": 404})


def _requests(api: SandboxAPI, query: str) -> list[tuple[float, int, str | None]]:
    since = decode_form(query).get("since", "0")
    try:
        start = float(since) if isinstance(since, str) else 0.0
    except ValueError:
        raise AdminError("since must be a number of seconds since the epoch") from None
    return [entry for entry in api.requests if entry[0] >= start]


def _payload(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(request.body or b"{}")
    except ValueError:
        raise AdminError("body must be a JSON object") from None
    if not isinstance(value, dict):
        raise AdminError("body must be a JSON object")
    return value


def _optional_int(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise AdminError(f"{name} must be a non-negative integer or null")
    return value


def _add_team(api: SandboxAPI, payload: dict[str, Any]) -> dict[str, Any]:
    features = payload.get("features", sorted(FEATURES))
    if not isinstance(features, list) or not set(features) <= FEATURES:
        raise AdminError(f"features must be a list drawn from {sorted(FEATURES)}")
    team = api.world.add_team(
        str(payload.get("name", "Sandbox team")),
        set(features),
        locked=bool(payload.get("locked", False)),
        site_limit=_optional_int(payload, "site_limit"),
        hourly_limit=_optional_int(payload, "hourly_limit"),
        setup=bool(payload.get("setup", True)),
    )
    return _team_view(api, team.id)


def _user(api: SandboxAPI, payload: dict[str, Any]) -> User:
    """The user named ``user``, created on demand."""
    name = payload.get("user")
    if not isinstance(name, str) or not name.strip():
        raise AdminError("user must be a non-empty string")
    return api.world.add_user(name)


def _team(api: SandboxAPI, payload: dict[str, Any]) -> Team:
    identifier = payload.get("team")
    team = api.world.team_by_identifier(identifier) if isinstance(identifier, str) else None
    if team is None:
        raise AdminError("unknown team")
    return team


def _add_key(api: SandboxAPI, payload: dict[str, Any]) -> dict[str, Any]:
    key = payload.get("key")
    scopes = payload.get("scopes", [SITES_API_SCOPE])
    if not isinstance(key, str) or not key.strip() or key in api.world.keys:
        raise AdminError("key must be a new non-empty string")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise AdminError("scopes must be a list of strings")
    if payload.get("legacy", False) is True:
        if "team" in payload or "role" in payload:
            raise AdminError("a legacy key has no team and no role: use /_sandbox/memberships")
        owner = _user(api, payload)
        api.world.add_key(key, None, "", scopes, owner)
        return {"team": None, "legacy": True, "user": owner.name, "scopes": scopes}
    if payload.get("team") is not None:
        team = _team(api, payload)
    else:
        default = min(api.world.teams.values(), key=lambda t: t.id, default=None)
        if default is None:
            raise AdminError("unknown team")
        team = default
    user: User | None = None if payload.get("user") is None else _user(api, payload)
    existing = api.world.team_role(user.id, team.id) if user else None
    role = payload.get("role", existing or "owner")
    if role not in ROLES:
        raise AdminError(f"role must be one of {sorted(ROLES)}")
    made = api.world.add_key(key, team, role, scopes, user)
    name = api.world.users[made.user_id].name
    return {"team": team.identifier, "legacy": False, "user": name, "role": role, "scopes": scopes}


def _add_membership(api: SandboxAPI, payload: dict[str, Any]) -> dict[str, Any]:
    """A team role, or with ``site`` a guest membership (an accepted guest) on that site."""
    user = _user(api, payload)
    role = payload.get("role")
    if "site" in payload:
        site = (
            api.world.find_site(payload["site"], api.now())
            if isinstance(payload["site"], str)
            else None
        )
        if site is None:
            raise AdminError("unknown site")
        if role not in GUEST_ROLES:
            raise AdminError(f"a guest role must be one of {sorted(GUEST_ROLES)}")
        site.guests = [g for g in site.guests if g.email != user.email]
        site.guests.append(Guest(api.world.new_id(), user.email, role, "accepted"))
        return {"user": user.name, "site": site.domain, "role": role, "guest": True}
    team = _team(api, payload)
    if role not in ROLES:
        raise AdminError(f"role must be one of {sorted(ROLES)}")
    api.world.memberships[(user.id, team.id)] = role
    return {"user": user.name, "team": team.identifier, "role": role, "guest": False}


def _add_site(api: SandboxAPI, payload: dict[str, Any]) -> dict[str, Any]:
    """A site made as if in Plausible's UI: no API, no feature or role checks."""
    world, now = api.world, api.now()
    team = _team(api, payload)
    raw, timezone = payload.get("domain"), payload.get("timezone", "Etc/UTC")
    old = payload.get("domain_changed_from")
    consolidated = payload.get("consolidated", False)
    if not isinstance(raw, str) or not raw.strip():
        raise AdminError("domain must be a non-empty string")
    domain = rules.normalise_domain(raw)
    message = rules.domain_error(domain)
    if message:
        raise AdminError(message)
    if domain_taken(world, now, domain, team.id, None):
        raise AdminError("domain is taken")
    if not isinstance(timezone, str) or not rules.is_valid_timezone(timezone):
        raise AdminError("timezone must be a valid IANA name")
    if not isinstance(consolidated, bool):
        raise AdminError("consolidated must be a boolean")
    if old is not None and (not isinstance(old, str) or not old):
        raise AdminError("domain_changed_from must be a non-empty string or null")
    site = Site(
        world.new_id(), domain, timezone, team.id, new_tracker(world), consolidated=consolidated
    )
    if old is not None:
        site.domain_changed_from, site.domain_changed_at = old, now
    world.sites[site.id] = site
    return _site_view(api, site)


def _team_view(api: SandboxAPI, team_id: int) -> dict[str, Any]:
    team = api.world.teams[team_id]
    return {
        "id": team.identifier,
        # The numeric id a JSON integer team_id is looked up by (§3 note 3).
        "internal_id": team.id,
        "name": team.name,
        "features": sorted(team.features),
        "locked": team.locked,
        "site_limit": team.site_limit,
        "hourly_limit": team.hourly_limit,
        "setup": team.setup,
    }


def _site_view(api: SandboxAPI, site: Site) -> dict[str, Any]:
    entry = site_response(site)
    entry.update(
        team=api.world.teams[site.team_id].identifier,
        consolidated=site.consolidated,
        domain_changed_from=site.domain_changed_from,
        inserted_at=site.inserted_at,
        shared_links=[{"name": n, "auth": a} for n, a in site.shared_links.items()],
        guests=[{"email": g.email, "role": g.role, "status": g.status} for g in site.guests],
    )
    return entry


def state(api: SandboxAPI) -> dict[str, Any]:
    world = api.world
    teams = {t.id: t.identifier for t in world.teams.values()}
    sites = [_site_view(api, site) for site in sorted(world.sites.values(), key=lambda s: s.id)]
    domains = {s.id: s.domain for s in world.sites.values()}
    goals = [
        {
            "id": g.id,
            "domain": domains[g.site_id],
            "goal_type": g.goal_type,
            "event_name": g.event_name,
            "page_path": g.page_path,
            "display_name": g.display_name,
            "custom_props": g.custom_props,
        }
        for g in sorted(world.goals.values(), key=lambda g: g.id)
    ]
    keys = [
        {
            "prefix": k.key[:6],
            "team": None if k.team_id is None else teams[k.team_id],
            "legacy": k.team_id is None,
            "user": world.users[k.user_id].name,
            "role": None if k.team_id is None else world.team_role(k.user_id, k.team_id),
            "scopes": k.scopes,
        }
        for k in world.keys.values()
    ]
    users = [
        {
            "name": u.name,
            "email": u.email,
            "teams": {teams[t]: r for (uid, t), r in world.memberships.items() if uid == u.id},
        }
        for u in sorted(world.users.values(), key=lambda u: u.id)
    ]
    return {
        "teams": [_team_view(api, t) for t in sorted(world.teams)],
        "keys": keys,
        "users": users,
        "sites": sites,
        "goals": goals,
        "settings": dataclasses.asdict(api.settings),
        "counters": api.counters_snapshot(),
    }
