"""``PlausibleClient`` against the sandbox over real HTTP: the site routes (create, get,
update, delete) and the lists (sites, goals, teams) with their pagination.

The mapping table itself is covered in tests/unit/test_errors.py; here the sandbox proves
the client and the mapping agree with a server that speaks the reference's exact texts.
"""

from __future__ import annotations

from typing import Any

import pytest

from testkit.api_texts import DOMAIN_TAKEN, INVALID_KEY, LOCKED, MISSING_KEY, NO_SITES_API
from testkit.plausible_clients import Box, drop_auth, expect_error
from testkit.sandbox_process import SandboxProcess
from worker.errors import (
    AuthenticationError,
    BadRequestError,
    DomainTakenError,
    ForbiddenError,
    NotFoundError,
    PaymentRequiredError,
)
from worker.plausible import Goal, PlausibleClient

# -- sites ------------------------------------------------------------------------------------


def test_site_lifecycle_uses_the_normalised_domain(
    api: PlausibleClient, sandbox: SandboxProcess
) -> None:
    site = api.create_site(
        "https://www.Example.com/", tracker_script_configuration={"outbound_links": True}
    )
    assert (site.domain, site.timezone, site.custom_properties) == ("example.com", "Etc/UTC", ())
    assert site.tracker_script_configuration["outbound_links"] is True
    assert str(site.tracker_script_configuration["id"]).startswith("pa-")
    assert api.get_site("example.com") == site
    moved = api.update_site(
        "example.com", domain="example.org", tracker_script_configuration={"file_downloads": True}
    )
    assert moved.domain == "example.org"
    assert moved.tracker_script_configuration["outbound_links"] is True  # merged, not replaced
    assert api.get_site("example.com").domain == "example.org"  # the old domain still resolves
    assert api.delete_site("example.org") is True
    assert sandbox.state()["sites"] == []
    expect_error(
        lambda: api.delete_site("example.org"),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )


def test_domain_with_a_slash_round_trips_through_every_site_route(api: PlausibleClient) -> None:
    site = api.create_site("example.com/blog", timezone="Europe/London")
    assert site.domain == "example.com/blog"
    assert api.get_site("example.com/blog").timezone == "Europe/London"
    goal = api.ensure_goal(site.domain, goal_type="page", page_path="/x")
    assert goal.domain == "example.com/blog"
    assert api.delete_goal(site.domain, goal.id) is True
    assert api.delete_site("example.com/blog") is True


@pytest.mark.parametrize(
    ("domain", "options", "message"),
    [
        ("", {}, "domain: can't be blank"),
        ("ok.test", {"timezone": "d"}, "timezone: is invalid"),
        ("h&llo.test", {}, "domain: must not contain URI reserved characters :?#[]@!$&'()*+,;="),
        ("a b.test", {}, "domain: only letters, numbers, slashes, underscores and period allowed"),
        (
            "ok.test",
            {"tracker_script_configuration": {"installation_type": "bogus"}},
            "tracker_script_configuration.installation_type: is invalid",
        ),
        (
            "ok.test",
            {"tracker_script_configuration": {"outbound_links": "maybe"}},
            "tracker_script_configuration.outbound_links: is invalid",
        ),
    ],
)
def test_create_site_validation_errors(
    api: PlausibleClient,
    sandbox: SandboxProcess,
    domain: str,
    options: dict[str, Any],
    message: str,
) -> None:
    expect_error(
        lambda: api.create_site(domain, **options),
        BadRequestError,
        "validation_error",
        message,
        400,
    )
    assert sandbox.state()["sites"] == []  # nothing half-created


def test_create_site_twice_is_domain_taken_with_the_trailing_newline(
    box: Box, api: PlausibleClient
) -> None:
    api.create_site("taken.test")
    expect_error(
        lambda: api.create_site("TAKEN.test"), DomainTakenError, "domain_taken", DOMAIN_TAKEN, 400
    )
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.create_site("taken.test"), DomainTakenError, "domain_taken", DOMAIN_TAKEN, 400
    )


def test_create_site_account_errors(box: Box) -> None:
    """Every 401/402/403 a create can meet, each mapped to its class and code."""
    no_api = box.client(box.key(features=["StatsAPI"]))
    expect_error(
        lambda: no_api.create_site("a.test"),
        PaymentRequiredError,
        "sites_api_unavailable",
        NO_SITES_API,
        402,
    )
    locked = box.client(box.key(locked=True))
    expect_error(
        lambda: locked.create_site("a.test"), PaymentRequiredError, "site_locked", LOCKED, 402
    )
    limited = box.client(box.key(site_limit=1))
    limited.create_site("one.test")
    expect_error(
        lambda: limited.create_site("two.test"),
        PaymentRequiredError,
        "site_limit_reached",
        "Your account has reached the limit of 1 sites. To unlock more sites, please upgrade your subscription.",
        402,
    )
    viewer = box.client(box.key(role="viewer"))
    expect_error(
        lambda: viewer.create_site("a.test"),
        ForbiddenError,
        "team_forbidden",
        "You can't add sites to the selected team.",
        403,
    )
    stats = box.client(box.sandbox.stats_api_key)
    expect_error(
        lambda: stats.create_site("a.test"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    unknown = box.client("no-such-key")
    expect_error(
        lambda: unknown.create_site("a.test"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    anonymous = box.rewriting(drop_auth)
    expect_error(
        lambda: anonymous.create_site("a.test"),
        AuthenticationError,
        "missing_api_key",
        MISSING_KEY,
        401,
    )


def test_delete_site_errors(box: Box, api: PlausibleClient) -> None:
    api.create_site("mine.test")
    expect_error(
        lambda: api.delete_site("nope.test"),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.delete_site("mine.test"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    stats = box.client(box.sandbox.stats_api_key)
    expect_error(
        lambda: stats.delete_site("mine.test"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    # Only the owner may delete; a lower role is told the site does not exist (§7.6).
    admin = box.client(box.key(role="admin"))
    expect_error(
        lambda: admin.delete_site("mine.test"),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )
    assert api.get_site("mine.test").domain == "mine.test"


def test_update_site_errors(api: PlausibleClient) -> None:
    api.create_site("a.test")
    api.create_site("b.test")
    expect_error(
        lambda: api.update_site("a.test"),
        BadRequestError,
        "validation_error",
        "Payload must contain at least one of the parameters 'domain', 'tracker_script_configuration'",
        400,
    )
    expect_error(
        lambda: api.update_site("a.test", domain="a.test"),
        BadRequestError,
        "validation_error",
        "domain: New domain must be different than the current one",
        400,
    )
    expect_error(
        lambda: api.update_site("a.test", domain="b.test"),
        DomainTakenError,
        "domain_taken",
        DOMAIN_TAKEN,
        400,
    )


def test_stats_key_reads_sites_and_teams(box: Box, api: PlausibleClient) -> None:
    api.create_site("read.test")
    stats = box.client(box.sandbox.stats_api_key)
    assert stats.get_site("read.test").domain == "read.test"
    assert [s.domain for s in stats.list_sites()] == ["read.test"]
    teams = list(stats.list_teams())
    assert len(teams) == 1
    assert teams[0].api_available is True


# -- lists and pagination ---------------------------------------------------------------------


def test_list_sites_pages_through_every_site_newest_first(box: Box, api: PlausibleClient) -> None:
    for n in range(5):
        api.create_site(f"s{n}.test")
    box.client(box.sandbox.other_team_api_key).create_site("elsewhere.test")
    requests_before = box.sandbox.state()["counters"]["total"]
    assert [s.domain for s in api.list_sites(page_size=2)] == [
        f"s{n}.test" for n in (4, 3, 2, 1, 0)
    ]
    assert box.sandbox.state()["counters"]["total"] - requests_before == 3  # pages of 2, 2, 1


def test_list_goals_pages_and_carries_no_domain(api: PlausibleClient) -> None:
    api.create_site("goals.test")
    made = [api.ensure_goal("goals.test", goal_type="event", event_name=f"E{n}") for n in range(3)]
    listed = list(api.list_goals("goals.test", page_size=1))
    assert [g.id for g in listed] == sorted((g.id for g in made), reverse=True)
    assert {g.domain for g in listed} == {None}
    assert listed[-1] == Goal(made[0].id, "event", "E0", None, "E0", {}, None)


def test_list_teams(box: Box, api: PlausibleClient) -> None:
    teams = list(api.list_teams(page_size=1))
    assert len(teams) == 1  # a team-scoped key sees only its own team
    assert isinstance(teams[0].id, str)
    assert isinstance(teams[0].name, str)
