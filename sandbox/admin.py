"""The ``/_sandbox/*`` admin routes (documented in ``sandbox.api``)."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from sandbox.http import Request, Response, json_response
from sandbox.sites import site_response
from sandbox.state import FEATURES, ROLES, SITES_API_SCOPE

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
    except AdminError as exc:
        return json_response(400, {"error": str(exc)})
    return json_response(404, {"message": "Not Found", "status": 404})


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


def _add_key(api: SandboxAPI, payload: dict[str, Any]) -> dict[str, Any]:
    key, role = payload.get("key"), payload.get("role", "owner")
    scopes = payload.get("scopes", [SITES_API_SCOPE])
    team_id = payload.get("team")
    team = api.world.team_by_identifier(team_id) if team_id else min(api.world.teams.values(), key=lambda t: t.id, default=None)
    if not isinstance(key, str) or not key.strip() or key in api.world.keys:
        raise AdminError("key must be a new non-empty string")
    if team is None:
        raise AdminError("unknown team")
    if role not in ROLES:
        raise AdminError(f"role must be one of {sorted(ROLES)}")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise AdminError("scopes must be a list of strings")
    api.world.add_key(key, team, role, scopes)
    return {"team": team.identifier, "role": role, "scopes": scopes}


def _team_view(api: SandboxAPI, team_id: int) -> dict[str, Any]:
    team = api.world.teams[team_id]
    return {
        "id": team.identifier,
        "name": team.name,
        "features": sorted(team.features),
        "locked": team.locked,
        "site_limit": team.site_limit,
        "hourly_limit": team.hourly_limit,
        "setup": team.setup,
    }


def state(api: SandboxAPI) -> dict[str, Any]:
    world = api.world
    teams = {t.id: t.identifier for t in world.teams.values()}
    sites = []
    for site in sorted(world.sites.values(), key=lambda s: s.id):
        entry = site_response(site)
        entry.update(
            team=teams[site.team_id],
            domain_changed_from=site.domain_changed_from,
            shared_links=[{"name": n, "auth": a} for n, a in site.shared_links.items()],
            guests=[{"email": g.email, "role": g.role, "status": g.status} for g in site.guests],
        )
        sites.append(entry)
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
        {"prefix": k.key[:6], "team": teams[k.team_id], "role": k.role, "scopes": k.scopes}
        for k in world.keys.values()
    ]
    return {
        "teams": [_team_view(api, t) for t in sorted(world.teams)],
        "keys": keys,
        "sites": sites,
        "goals": goals,
        "settings": dataclasses.asdict(api.settings),
        "counters": api.counters_snapshot(),
    }
