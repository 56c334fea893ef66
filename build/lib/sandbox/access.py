"""``AuthorizePublicAPI`` (§3) with the §4 rate limits: who may call, and in which team context.

Steps, in order; the first failure answers: bearer header, ``site_id`` on site-context routes,
key lookup, hourly then burst limit, scope, the site checks (7a-7g) when ``site_id`` resolves,
then the team context (8): the key's team, or for a legacy key the team named by ``team_id``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.http import Call, Request, error, framework_error
from sandbox.state import SITES_API_SCOPE, ApiKey, Site, Team, World

if TYPE_CHECKING:
    from sandbox.api import SandboxAPI

INVALID_KEY = (
    "Invalid API key. Please make sure you're using a valid API key with access to the resource "
    "you've requested."
)
LOCKED = (
    "This Plausible site is locked due to missing active subscription. In order to access it, the "
    "site owner should subscribe to a suitable plan"
)
CONSOLIDATED = "This operation is unavailable for a consolidated view"


def no_access(feature: str) -> str:
    return (
        f"The account that owns this API key does not have access to {feature}. Please make sure "
        f"you're using the API key of a subscriber account and that the subscription plan includes {feature}"
    )


def authorize(
    api: SandboxAPI, request: Request, params: dict[str, Any], scope: str, site_context: bool
) -> Call:
    """Run the plug; return the authorised call or raise the first failure's reply."""
    header = request.header("authorization")
    if header is None or not header.startswith("Bearer "):
        raise error(401, "Missing API key. Please use a valid Plausible API key as a Bearer Token.")
    site_id = params.get("site_id")
    if site_context and site_id in (None, ""):
        raise error(
            400, "Missing site ID. Please provide the required site_id parameter with your request."
        )
    world = api.world
    key = world.keys.get(header[len("Bearer ") :].strip())
    if key is None:
        raise error(401, INVALID_KEY)
    now = api.now()
    site = world.find_site(site_id, now) if isinstance(site_id, str) else None
    key_team = None if key.team_id is None else world.teams[key.team_id]
    _check_rate_limits(api, _bucket(world, key, key_team, site if site_context else None), now)
    if scope == SITES_API_SCOPE and not any(
        SITES_API_SCOPE.startswith(s.removesuffix("*")) for s in key.scopes if s.endswith("*")
    ):
        raise error(401, INVALID_KEY)
    feature = "Sites API" if scope == SITES_API_SCOPE else "Stats API"
    if site_id is not None:
        if not isinstance(site_id, str):
            # Ecto.Query.CastError in the plug, rendered by the error view.
            raise framework_error(400)
        if site is not None:
            _check_site(world, key, site, feature)
    # Team-scoped keys always use their own team; any team_id param is ignored (note 3).
    team = key_team if key.team_id is not None else world.team_by_param(params.get("team_id"))
    if team is not None:
        _check_team(team, feature)
        if world.team_role(key.user_id, team.id) is None:
            raise error(401, INVALID_KEY)
    return Call(world, api.settings, key, world.users[key.user_id], team, params, now, api.base_url)


def _check_site(world: World, key: ApiKey, site: Site, feature: str) -> None:
    """Step 7: the site resolved (consolidated views included)."""
    if site.consolidated:
        raise error(400, CONSOLIDATED)
    if key.team_id is not None and key.team_id != site.team_id:
        # 7c before 7d/7e: a 401 wins over a 402 (note 5).
        raise error(401, INVALID_KEY)
    _check_team(world.teams[site.team_id], feature)
    if world.site_role(key.user_id, site) is None:
        raise error(401, INVALID_KEY)


def _check_team(team: Team, feature: str) -> None:
    if team.locked:
        raise error(402, LOCKED)
    if ("SitesAPI" if feature == "Sites API" else "StatsAPI") not in team.features:
        raise error(402, no_access(feature))


def _bucket(
    world: World, key: ApiKey, key_team: Team | None, site: Site | None
) -> tuple[str, Team | None]:
    """The §4 bucket and the team whose limit applies (None: the legacy per-user limit).

    A team-scoped key uses its team's; a legacy key the team of the regular site a site-context
    route resolved, otherwise its user's own bucket.
    """
    team = key_team
    if team is None and site is not None and not site.consolidated:
        team = world.teams[site.team_id]
    if team is not None:
        return f"api_request:team:{team.identifier}", team
    return f"api_request:legacy_user:{key.user_id}", None


def _check_rate_limits(api: SandboxAPI, bucket: tuple[str, Team | None], now: float) -> None:
    name, team = bucket
    api.bucket = name
    settings = api.settings
    if team is not None:
        hourly = settings.hourly_limit if team.hourly_limit is None else team.hourly_limit
    else:
        hourly = settings.legacy_hourly_limit
    # Hourly first: it counts even the requests the burst check then refuses.
    if not api.limiter.hit(name, "hour", now, settings.hour_seconds, hourly):
        raise error(
            429,
            f"Too many API requests. The limit is {hourly} per hour. Please contact us to request more capacity.",
        )
    if not api.limiter.hit(name, "burst", now, settings.burst_seconds, settings.burst_limit):
        seconds = _number(settings.burst_seconds)
        raise error(
            429,
            f"Too many API requests in a short period of time. The limit is {settings.burst_limit} "
            f"per {seconds} seconds. Please throttle your requests.",
        )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
