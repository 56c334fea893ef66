"""Site routes: list sites and teams, create, get, update and delete a site (§7.1 to §7.6)."""

from __future__ import annotations

from typing import Any

import plausible_rules as rules
from sandbox.http import Call, Reply, error, internal_error
from sandbox.pagination import paginate
from sandbox.state import PERSONAL_TEAM_NAME, TRACKER_BOOLEANS, Goal, Site, Team, World

READ_ROLES = ("owner", "admin", "editor", "viewer")
WRITE_ROLES = ("owner", "admin", "editor")
INSTALLATION_TYPES = rules.INSTALLATION_TYPES
#: Tracker switches that bring their own goal with them (§9).
AUTO_GOALS = {
    "track_404_pages": "404",
    "outbound_links": "Outbound Link: Click",
    "file_downloads": "File Download",
    "form_submissions": "Form: Submission",
}
_BOOLEAN_CASTS = {True: True, False: False, "true": True, "false": False, "1": True, "0": False}


def find_site(call: Call, site_id: Any, roles: tuple[str, ...]) -> Site:
    """The site, if the user's role on it is good enough; else Plausible's 404 (never a 403).

    A team-scoped key only ever finds its own team's sites.
    """
    site = call.world.find_site(site_id, call.now) if isinstance(site_id, str) else None
    if (
        site is None
        or (call.key.team_id is not None and site.team_id != call.key.team_id)
        or call.world.site_role(call.user.id, site) not in roles
    ):
        raise error(404, "Site could not be found")
    return site


def site_response(site: Site) -> dict[str, Any]:
    return {
        "domain": site.domain,
        "timezone": site.timezone,
        "custom_properties": list(site.custom_props),
        "tracker_script_configuration": dict(site.tracker),
    }


def _listed(call: Call, site: Site) -> bool:
    """§7.1 scoping: the team context's sites, else every site the user can reach."""
    if site.consolidated:
        return False
    if call.team is not None:
        return site.team_id == call.team.id
    return call.world.site_role(call.user.id, site) is not None


def list_sites(call: Call) -> dict[str, Any]:
    sites = sorted((s for s in call.world.sites.values() if _listed(call, s)), key=lambda s: -s.id)
    page, meta = paginate(sites, call.params, lambda s: s.id)
    return {"sites": [{"domain": s.domain, "timezone": s.timezone} for s in page], "meta": meta}


def list_teams(call: Call) -> dict[str, Any]:
    """The key's team; for a legacy key every team the user is a (non-guest) member of."""
    world = call.world
    if call.key.team_id is not None:
        teams = [world.teams[call.key.team_id]]
    else:
        member_of = {t for (u, t) in world.memberships if u == call.user.id}
        teams = sorted((world.teams[t] for t in member_of), key=lambda t: -t.id)
    page, meta = paginate(teams, call.params, lambda t: t.id)
    entries = [
        {
            "id": t.identifier,
            "name": t.name if t.setup else PERSONAL_TEAM_NAME,
            "api_available": "StatsAPI" in t.features,
        }
        for t in page
    ]
    return {"teams": entries, "meta": meta}


def _site_changeset_error(params: dict[str, Any]) -> tuple[str | None, str]:
    """(error, normalised domain). Plausible reports only the last error its changeset added."""
    errors: list[str] = []
    raw_domain, domain = params.get("domain"), ""
    if raw_domain is not None and not isinstance(raw_domain, str):
        errors.append("domain: is invalid")
    elif raw_domain is None or raw_domain.strip() == "":
        errors.append(rules.BLANK_MESSAGE)
    timezone = params.get("timezone", "Etc/UTC")
    if timezone is not None and not isinstance(timezone, str):
        errors.append("timezone: is invalid")
    elif timezone is None or timezone.strip() == "":
        errors.append("timezone: can't be blank")
    elif not rules.is_valid_timezone(timezone):
        errors.append("timezone: is invalid")
    if isinstance(raw_domain, str) and raw_domain.strip():
        domain = rules.normalise_domain(raw_domain)
        domain_error = rules.domain_error(domain)
        if domain_error:
            errors.append(domain_error)
    return (errors[-1] if errors else None), domain


def domain_taken(
    world: World, now: float, domain: str, team_id: int, site: Site | None, owner: int | None = None
) -> bool:
    """Unique index on domains, plus the trigger guarding another team's old domain for 72 h.

    Old domains of sites that user ``owner`` owns do not count: a create clears them first.
    """
    for other in world.sites.values():
        if other is site:
            continue
        if other.domain == domain:
            return True
        if (
            other.domain_changed_from == domain
            and other.team_id != team_id
            and not world.old_domain_expired(other, now)
            and (owner is None or world.team_role(owner, other.team_id) != "owner")
        ):
            return True
    return False


def tracker_config(current: dict[str, Any], changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into a tracker config; the first invalid field, in cast order, is an error."""
    if not isinstance(changes, dict):
        # Ecto.CastError inside the controller: the error handler answers 400.
        raise internal_error(400)
    config = dict(current)
    if "installation_type" in changes:
        value = changes["installation_type"]
        if isinstance(value, str) and value.strip() == "":
            value = None
        if value is not None and value not in INSTALLATION_TYPES:
            raise error(400, "tracker_script_configuration.installation_type: is invalid")
        config["installation_type"] = value
    for name in TRACKER_BOOLEANS:
        if name in changes:
            value = changes[name]
            if not isinstance(value, bool | str) or value not in _BOOLEAN_CASTS:
                raise error(400, f"tracker_script_configuration.{name}: is invalid")
            config[name] = _BOOLEAN_CASTS[value]
    return config


def new_tracker(world: World) -> dict[str, Any]:
    config: dict[str, Any] = {"id": "pa-" + world.nanoid(), "installation_type": None}
    config.update(dict.fromkeys(TRACKER_BOOLEANS, False))
    return config


def _sync_auto_goals(call: Call, site: Site, before: dict[str, Any]) -> None:
    for switch, event_name in AUTO_GOALS.items():
        existing = [g for g in call.world.site_goals(site) if g.event_name == event_name]
        if site.tracker[switch] and not before[switch] and not existing:
            goal_id = call.world.new_id()
            call.world.goals[goal_id] = Goal(goal_id, site.id, event_name, None, -1, event_name, {})
        elif before[switch] and not site.tracker[switch]:
            for goal in existing:
                del call.world.goals[goal.id]


def _target_team(call: Call) -> tuple[Team, bool]:
    """§7.3 step 1: the team a create goes to, and whether it is a personal team made just now."""
    world, user = call.world, call.user
    if call.team is not None:
        # The key's team, or the team a legacy key named with team_id.
        if world.team_role(user.id, call.team.id) not in WRITE_ROLES:
            raise error(403, "You can't add sites to the selected team.")
        return call.team, False
    personal = world.owned_personal_teams(user.id)
    if len(personal) > 1:
        raise error(400, "You must select a team with 'team_id' parameter.")
    if personal:
        return personal[0], False
    # Teams.get_or_create: a new personal team on a trial (no Sites API feature).
    return world.create_personal_team(user), True


def create_site(call: Call) -> dict[str, Any]:
    team, created = _target_team(call)
    try:
        return _create_in(call, team)
    except Reply:
        if created:
            # One transaction: the personal team goes with the failed site.
            del call.world.teams[team.id]
            del call.world.memberships[(call.user.id, team.id)]
        raise


def _create_in(call: Call, team: Team) -> dict[str, Any]:
    world, params = call.world, call.params
    team_sites = sum(1 for s in world.sites.values() if s.team_id == team.id)
    if team.site_limit is not None and team_sites >= team.site_limit:
        raise error(
            402,
            f"Your account has reached the limit of {team.site_limit} sites. "
            "To unlock more sites, please upgrade your subscription.",
        )
    message, domain = _site_changeset_error(params)
    if message:
        raise error(400, message)
    if len(domain) > rules.MAX_DOMAIN_LENGTH:
        raise internal_error()
    if domain_taken(world, call.now, domain, team.id, None, owner=call.user.id):
        raise error(400, rules.DOMAIN_TAKEN_MESSAGE)
    blank = new_tracker(world)
    tracker = tracker_config(blank, _given(params.get("tracker_script_configuration"), {}))
    # Re-registering your own old domain clears its 72-hour marker first.
    for other in world.sites.values():
        if (
            other.domain_changed_from == domain
            and world.team_role(call.user.id, other.team_id) == "owner"
        ):
            other.domain_changed_from = other.domain_changed_at = None
    site = Site(world.new_id(), domain, params.get("timezone", "Etc/UTC"), team.id, tracker)
    site.inserted_at = call.now
    world.sites[site.id] = site
    _sync_auto_goals(call, site, blank)
    return site_response(site)


def get_site(call: Call) -> dict[str, Any]:
    return site_response(find_site(call, call.params["site_id"], READ_ROLES))


def update_site(call: Call) -> dict[str, Any]:
    params = call.params
    if "domain" not in params and "tracker_script_configuration" not in params:
        raise error(
            400,
            "Payload must contain at least one of the parameters 'domain', 'tracker_script_configuration'",
        )
    site = find_site(call, params["site_id"], WRITE_ROLES)
    new_domain = _checked_new_domain(call, site, params.get("domain"))
    changes = params.get("tracker_script_configuration")
    # Domain and config change in one transaction: validate both before touching either.
    tracker = (
        site.tracker if _given(changes, None) is None else tracker_config(site.tracker, changes)
    )
    if new_domain is not None:
        site.domain_changed_from, site.domain_changed_at = site.domain, call.now
        site.domain = new_domain
    before, site.tracker = site.tracker, tracker
    _sync_auto_goals(call, site, before)
    return site_response(site)


def _given(value: Any, default: Any) -> Any:
    """Elixir truthiness: only nil and false stand for "not given"."""
    return default if value is None or value is False else value


def _checked_new_domain(call: Call, site: Site, raw: Any) -> str | None:
    if _given(raw, None) is None:
        return None
    if not isinstance(raw, str):
        raise error(400, "domain: is invalid")
    domain = rules.normalise_domain(raw)
    if raw == "" or domain == site.domain:
        raise error(400, "domain: New domain must be different than the current one")
    message = rules.domain_error(domain)
    if message:
        raise error(400, message)
    if len(domain) > rules.MAX_DOMAIN_LENGTH:
        raise internal_error()
    if domain_taken(call.world, call.now, domain, site.team_id, site):
        raise error(400, rules.DOMAIN_TAKEN_MESSAGE)
    return domain


def delete_site(call: Call) -> dict[str, Any]:
    site = find_site(call, call.params["site_id"], ("owner",))
    del call.world.sites[site.id]
    for goal in call.world.site_goals(site):
        del call.world.goals[goal.id]
    return {"deleted": True}
