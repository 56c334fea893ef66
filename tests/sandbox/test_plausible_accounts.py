"""``PlausibleClient`` against the sandbox over real HTTP with the accounts the seed meets in
the wild: legacy keys, memberships, sites made in the UI and consolidated views (§3, §4, §7.3).

The mapping table itself is covered in tests/unit/test_errors.py; here the sandbox proves
the client and the mapping agree with a server that speaks the reference's exact texts.
"""

from __future__ import annotations

from collections.abc import Callable

from testkit.api_texts import CONSOLIDATED, INVALID_KEY, NO_SITES_API, SITE_NOT_FOUND
from testkit.plausible_clients import Box, expect_error
from worker.errors import (
    AuthenticationError,
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    PaymentRequiredError,
    RateLimitedError,
)
from worker.plausible import PlausibleClient


def _seed_calls(client: PlausibleClient, domain: str) -> list[Callable[[], object]]:
    """The seed's operations on an existing site: shared link, goal, goal delete, site delete."""
    return [
        lambda: client.ensure_shared_link(domain, "link"),
        lambda: client.ensure_goal(domain, goal_type="event", event_name="E"),
        lambda: client.delete_goal(domain, 1),
        lambda: client.delete_site(domain),
    ]


def _default_team(box: Box) -> str:
    team: str = box.sandbox.state()["teams"][0]["id"]
    return team


def test_guest_editor_on_a_foreign_team_without_sites_api_cannot_delete(box: Box) -> None:
    foreign = box.sandbox.add_team(name="Foreign", features=["StatsAPI"])
    box.sandbox.add_site(domain="foreign.test", team=foreign["id"])
    box.sandbox.add_legacy_key("guest-key", "gail")
    box.sandbox.add_membership(user="gail", site="foreign.test", role="editor")
    guest = box.client("guest-key")
    expect_error(
        lambda: guest.delete_site("foreign.test"),
        PaymentRequiredError,
        "sites_api_unavailable",
        NO_SITES_API,
        402,
    )
    # A key of that team meets the same 402 on every seed operation.
    own = box.client(box.key(team=foreign["id"]))
    for call in _seed_calls(own, "foreign.test"):
        expect_error(call, PaymentRequiredError, "sites_api_unavailable", NO_SITES_API, 402)
    assert [s["domain"] for s in box.sandbox.state()["sites"]] == ["foreign.test"]


def test_consolidated_view_refuses_every_seed_operation(box: Box, api: PlausibleClient) -> None:
    view = "6f1c2a4e-0000-4000-8000-00000000000a"
    box.sandbox.add_site(domain=view, team=_default_team(box), consolidated=True)
    for call in _seed_calls(api, view):
        expect_error(call, BadRequestError, "consolidated_view", CONSOLIDATED, 400)
    # Before the key's team is compared (7a before 7c).
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.ensure_goal(view, goal_type="page", page_path="/"),
        BadRequestError,
        "consolidated_view",
        CONSOLIDATED,
        400,
    )
    assert list(api.list_sites()) == []


def test_legacy_create_site_team_resolution(box: Box) -> None:
    sandbox = box.sandbox
    sandbox.add_legacy_key("legacy-key", "pat")
    for name in ("One", "Two"):
        sandbox.add_membership(
            user="pat", team=sandbox.add_team(name=name, setup=False)["id"], role="owner"
        )
    viewed = sandbox.add_team(name="Viewed")
    sandbox.add_membership(user="pat", team=viewed["id"], role="viewer")
    legacy = box.client("legacy-key")
    expect_error(
        lambda: legacy.create_site("which.test"),
        BadRequestError,
        "team_required",
        "You must select a team with 'team_id' parameter.",
        400,
    )
    expect_error(
        lambda: legacy.create_site("which.test", team_id=viewed["id"]),
        ForbiddenError,
        "team_forbidden",
        "You can't add sites to the selected team.",
        403,
    )
    stranger = sandbox.add_team(name="Stranger")
    expect_error(
        lambda: legacy.create_site("which.test", team_id=stranger["id"]),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    assert sandbox.state()["sites"] == []


def test_legacy_create_in_a_new_personal_team_then_402_on_the_site(box: Box) -> None:
    box.sandbox.add_legacy_key("legacy-key", "pat")
    legacy = box.client("legacy-key")
    site = legacy.create_site("personal.test")
    assert site.domain == "personal.test"
    (team,) = legacy.list_teams()
    assert (team.name, team.api_available) == ("My personal sites", True)
    # The trial lacks the Sites API: the site exists, yet every provisioning call is refused.
    for call in _seed_calls(legacy, "personal.test"):
        expect_error(call, PaymentRequiredError, "sites_api_unavailable", NO_SITES_API, 402)
    assert legacy.get_site("personal.test") == site


def test_roles_too_low_get_site_not_found(box: Box, api: PlausibleClient) -> None:
    api.create_site("roles.test")
    team = _default_team(box)
    editor = box.client(box.key(team=team, role="editor"))
    expect_error(
        lambda: editor.delete_site("roles.test"),
        NotFoundError,
        "site_not_found",
        SITE_NOT_FOUND,
        404,
    )
    viewer = box.client(box.key(team=team, role="viewer"))
    expect_error(
        lambda: viewer.ensure_goal("roles.test", goal_type="event", event_name="E"),
        NotFoundError,
        "site_not_found",
        SITE_NOT_FOUND,
        404,
    )
    box.sandbox.add_legacy_key("guest-viewer-key", "vic")
    box.sandbox.add_membership(user="vic", site="roles.test", role="viewer")
    guest_viewer = box.client("guest-viewer-key")
    for call in _seed_calls(guest_viewer, "roles.test"):
        expect_error(call, NotFoundError, "site_not_found", SITE_NOT_FOUND, 404)
    box.sandbox.add_legacy_key("guest-editor-key", "edith")
    box.sandbox.add_membership(user="edith", site="roles.test", role="editor")
    guest_editor = box.client("guest-editor-key")
    goal = guest_editor.ensure_goal("roles.test", goal_type="event", event_name="E")
    assert guest_editor.ensure_shared_link("roles.test", "n").name == "n"
    assert guest_editor.delete_goal("roles.test", goal.id) is True
    expect_error(
        lambda: guest_editor.delete_site("roles.test"),
        NotFoundError,
        "site_not_found",
        SITE_NOT_FOUND,
        404,
    )
    assert api.get_site("roles.test").domain == "roles.test"


def test_legacy_keys_429_on_the_users_bucket_and_on_the_sites_team(box: Box) -> None:
    sandbox = box.sandbox
    # A window of ~31 years: no boundary can fall between the calls below.
    sandbox.configure(legacy_hourly_limit=1, hour_seconds=1_000_000_000)
    team = sandbox.add_team(name="Quota", hourly_limit=1)
    sandbox.add_site(domain="quota.test", team=team["id"])
    sandbox.add_legacy_key("legacy-a", "pat")
    sandbox.add_legacy_key("legacy-b", "pat")
    sandbox.add_membership(user="pat", team=team["id"], role="owner")
    first, second = box.client("legacy-a"), box.client("legacy-b")
    hourly = "Too many API requests. The limit is 1 per hour. Please contact us to request more capacity."
    # Both keys share the user's bucket for calls without a resolvable site.
    expect_error(
        lambda: first.ensure_goal("nowhere.test", goal_type="event", event_name="E"),
        NotFoundError,
        "site_not_found",
        SITE_NOT_FOUND,
        404,
    )
    error = expect_error(
        lambda: second.create_site("late.test", team_id=team["id"]),
        RateLimitedError,
        "rate_limited",
        hourly,
        429,
    )
    assert isinstance(error, RateLimitedError)
    assert error.limit == "hourly"
    # A resolvable site counts against its team's bucket instead, shared with the team's keys.
    assert second.ensure_shared_link("quota.test", "n").name == "n"
    team_key = box.client(box.key(team=team["id"]))
    for call in (
        lambda: first.delete_site("quota.test"),
        lambda: team_key.ensure_goal("quota.test", goal_type="event", event_name="E"),
    ):
        expect_error(call, RateLimitedError, "rate_limited", hourly, 429)
    assert [s["domain"] for s in sandbox.state()["sites"]] == ["quota.test"]
