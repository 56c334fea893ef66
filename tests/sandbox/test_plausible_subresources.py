"""``PlausibleClient`` against the sandbox over real HTTP: what hangs off a site, i.e. shared
links, goals, custom properties and guests, with every error each route can give.

The mapping table itself is covered in tests/unit/test_errors.py; here the sandbox proves
the client and the mapping agree with a server that speaks the reference's exact texts.
"""

from __future__ import annotations

from typing import Any

import pytest

from testkit.api_texts import INVALID_KEY, MISSING_SITE_ID, NO_PROPS, NO_SITES_API
from testkit.plausible_clients import Box, edit_json, edit_path, expect_error
from worker.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PaymentRequiredError,
    ServerError,
)
from worker.plausible import PlausibleClient

# -- shared links -----------------------------------------------------------------------------


def test_shared_link_is_find_or_create(box: Box, api: PlausibleClient) -> None:
    api.create_site("share.test")
    link = api.ensure_shared_link("share.test", "Wordpress")
    assert link.name == "Wordpress"
    assert link.url.startswith(f"{box.sandbox.base_url}/share/share.test?auth=")
    assert api.ensure_shared_link("share.test", "Wordpress") == link


def test_shared_link_errors(box: Box, api: PlausibleClient) -> None:
    api.create_site("share.test")
    expect_error(
        lambda: api.ensure_shared_link("share.test", "WordPress - Shared Dashboard"),
        BadRequestError,
        "reserved_name",
        "This name is reserved. Please choose another one",
        400,
    )
    expect_error(
        lambda: api.ensure_shared_link("share.test", " "),
        BadRequestError,
        "validation_error",
        "can't be blank",
        400,
    )
    nameless = box.rewriting(edit_json(name=...))
    expect_error(
        lambda: nameless.ensure_shared_link("share.test", "x"),
        BadRequestError,
        "validation_error",
        "Parameter `name` is required to create a shared link",
        400,
    )
    expect_error(
        lambda: api.ensure_shared_link("", "x"),
        BadRequestError,
        "missing_site_id",
        MISSING_SITE_ID,
        400,
    )
    expect_error(
        lambda: api.ensure_shared_link("nope.test", "x"),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.ensure_shared_link("share.test", "x"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    stats = box.client(box.sandbox.stats_api_key)
    expect_error(
        lambda: stats.ensure_shared_link("share.test", "x"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    plain = box.client(box.key(features=["SitesAPI", "StatsAPI"]))
    plain.create_site("plain.test")
    expect_error(
        lambda: plain.ensure_shared_link("plain.test", "x"),
        PaymentRequiredError,
        "shared_links_unavailable",
        "Your current subscription plan does not include Shared Links",
        402,
    )
    no_api = box.client(box.key(features=["StatsAPI", "SharedLinks"]))
    expect_error(
        lambda: no_api.ensure_shared_link("x.test", "x"),
        PaymentRequiredError,
        "sites_api_unavailable",
        NO_SITES_API,
        402,
    )


# -- goals ------------------------------------------------------------------------------------


def test_goals_are_find_or_create_and_deletable(api: PlausibleClient) -> None:
    api.create_site("goal.test")
    event = api.ensure_goal(
        "goal.test", goal_type="event", event_name=" Signup ", custom_props={"plan": "pro"}
    )
    assert (event.goal_type, event.event_name, event.display_name) == ("event", "Signup", "Signup")
    assert (event.custom_props, event.domain) == ({"plan": "pro"}, "goal.test")
    page = api.ensure_goal("goal.test", goal_type="page", page_path="pricing")
    assert (page.goal_type, page.page_path, page.display_name) == (
        "page",
        "/pricing",
        "Visit /pricing",
    )
    again = api.ensure_goal(
        "goal.test",
        goal_type="event",
        event_name="Signup",
        custom_props={"plan": "pro"},
        display_name="Other",
    )
    assert again == event  # same id, not renamed
    assert api.delete_goal("goal.test", page.id) is True
    expect_error(
        lambda: api.delete_goal("goal.test", page.id),
        NotFoundError,
        "goal_not_found",
        "Goal could not be found",
        404,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"goal_type": "event"}, "Parameter `event_name` is required to create a goal"),
        ({"goal_type": "page"}, "Parameter `page_path` is required to create a goal"),
        (
            {
                "goal_type": "event",
                "event_name": "e",
                "custom_props": {"a": "1", "b": "2", "c": "3", "d": "4"},
            },
            "custom_props: use at most 3 properties per goal",
        ),
        (
            {"goal_type": "event", "event_name": "e", "custom_props": {"a": 1}},
            "custom_props: must be a map with string keys and string values",
        ),
        (
            {"goal_type": "event", "event_name": "e", "custom_props": {"k" * 301: "v"}},
            "custom_props: key length is 1..300 characters",
        ),
        (
            {"goal_type": "event", "event_name": "e", "custom_props": {"k": "v" * 2001}},
            "custom_props: value length is 1..2000 characters",
        ),
        (
            {"goal_type": "event", "event_name": "engagement"},
            "page_path: this field is required and must start with a /, "
            "event_name: The event name 'engagement' is reserved and cannot be used as a goal",
        ),
        (
            {"goal_type": "event", "event_name": "e", "page_path": "/p"},
            "event_name: cannot co-exist with page_path",
        ),
    ],
)
def test_ensure_goal_validation_errors(
    api: PlausibleClient, options: dict[str, Any], message: str
) -> None:
    api.create_site("goal.test")
    expect_error(
        lambda: api.ensure_goal("goal.test", **options),
        BadRequestError,
        "validation_error",
        message,
        400,
    )


def test_ensure_goal_errors_beyond_validation(box: Box, api: PlausibleClient) -> None:
    api.create_site("goal.test")
    typeless = box.rewriting(edit_json(goal_type=...))
    expect_error(
        lambda: typeless.ensure_goal("goal.test", goal_type="event", event_name="e"),
        BadRequestError,
        "validation_error",
        "Parameter `goal_type` is required to create a goal",
        400,
    )
    listy = box.rewriting(edit_json(custom_props=["a"]))
    expect_error(
        lambda: listy.ensure_goal("goal.test", goal_type="event", event_name="e", custom_props={}),
        BadRequestError,
        "validation_error",
        "custom_props: is invalid",
        400,
    )
    # An unknown goal_type crashes Plausible (FunctionClauseError): a 5xx, retryable by class.
    expect_error(
        lambda: api.ensure_goal("goal.test", goal_type="scroll", page_path="/"),
        ServerError,
        "server_error",
        "internal server error",
        500,
    )
    box.sandbox.configure(max_goals_per_site=1)
    api.ensure_goal("goal.test", goal_type="event", event_name="first")
    expect_error(
        lambda: api.ensure_goal("goal.test", goal_type="event", event_name="second"),
        BadRequestError,
        "validation_error",
        "event_name: Maximum number of goals reached, page_path: Maximum number of goals reached",
        400,
    )
    expect_error(
        lambda: api.ensure_goal("", goal_type="event", event_name="e"),
        BadRequestError,
        "missing_site_id",
        MISSING_SITE_ID,
        400,
    )
    expect_error(
        lambda: api.ensure_goal("nope.test", goal_type="event", event_name="e"),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.ensure_goal("goal.test", goal_type="event", event_name="e"),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    no_api = box.client(box.key(features=["StatsAPI", "Props"]))
    expect_error(
        lambda: no_api.ensure_goal("x.test", goal_type="event", event_name="e"),
        PaymentRequiredError,
        "sites_api_unavailable",
        NO_SITES_API,
        402,
    )
    no_props = box.client(box.key(features=["SitesAPI", "StatsAPI"]))
    no_props.create_site("noprops.test")
    expect_error(
        lambda: no_props.ensure_goal(
            "noprops.test", goal_type="event", event_name="e", custom_props={"a": "b"}
        ),
        PaymentRequiredError,
        "custom_props_unavailable",
        NO_PROPS,
        402,
    )


def test_delete_goal_errors(box: Box, api: PlausibleClient) -> None:
    api.create_site("one.test")
    api.create_site("two.test")
    goal = api.ensure_goal("one.test", goal_type="event", event_name="e")
    expect_error(
        lambda: api.delete_goal("two.test", goal.id),
        NotFoundError,
        "goal_not_found",
        "Goal could not be found",
        404,
    )
    expect_error(
        lambda: api.delete_goal("nope.test", goal.id),
        NotFoundError,
        "site_not_found",
        "Site could not be found",
        404,
    )
    expect_error(
        lambda: api.delete_goal("", goal.id),
        BadRequestError,
        "missing_site_id",
        MISSING_SITE_ID,
        400,
    )
    non_numeric = box.rewriting(edit_path(f"/goals/{goal.id}", "/goals/abc"))
    expect_error(
        lambda: non_numeric.delete_goal("one.test", goal.id),
        BadRequestError,
        "validation_error",
        "internal server error",
        400,
    )
    other = box.client(box.sandbox.other_team_api_key)
    expect_error(
        lambda: other.delete_goal("one.test", goal.id),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    stats = box.client(box.sandbox.stats_api_key)
    expect_error(
        lambda: stats.delete_goal("one.test", goal.id),
        AuthenticationError,
        "invalid_api_key",
        INVALID_KEY,
        401,
    )
    no_api = box.client(box.key(features=["StatsAPI"]))
    expect_error(
        lambda: no_api.delete_goal("x.test", goal.id),
        PaymentRequiredError,
        "sites_api_unavailable",
        NO_SITES_API,
        402,
    )
    assert [g.id for g in api.list_goals("one.test")] == [goal.id]


# -- custom properties and guests -------------------------------------------------------------


def test_custom_props_add_list_delete(api: PlausibleClient) -> None:
    api.create_site("props.test")
    assert api.add_custom_prop("props.test", "title") is True
    assert api.add_custom_prop("props.test", "author") is True
    assert api.add_custom_prop("props.test", "author") is True  # idempotent
    assert api.add_custom_prop("props.test", "a/b/c") is True
    assert api.list_custom_props("props.test") == ["a/b/c", "author", "title"]
    assert api.get_site("props.test").custom_properties == ("a/b/c", "author", "title")
    assert api.delete_custom_prop("props.test", "a/b/c") is True
    assert api.delete_custom_prop("props.test", "never-there") is True
    assert api.list_custom_props("props.test") == ["author", "title"]
    expect_error(
        lambda: api.add_custom_prop("props.test", "p" * 301),
        BadRequestError,
        "validation_error",
        "Parameter `property` is too long",
        400,
    )


def test_custom_props_need_the_props_feature(box: Box) -> None:
    plain = box.client(box.key(features=["SitesAPI", "StatsAPI"]))
    plain.create_site("plain.test")
    expect_error(
        lambda: plain.add_custom_prop("plain.test", "x"),
        PaymentRequiredError,
        "custom_props_unavailable",
        NO_PROPS,
        402,
    )


def test_guests_invite_list_delete(api: PlausibleClient) -> None:
    api.create_site("guests.test")
    guest = api.ensure_guest("guests.test", "ann@example.com", "viewer")
    assert (guest.email, guest.role, guest.status) == ("ann@example.com", "viewer", "invited")
    assert api.ensure_guest("guests.test", "ann@example.com", "editor") == guest  # role unchanged
    api.ensure_guest("guests.test", "bob+x@example.com", "editor")
    assert [g.email for g in api.list_guests("guests.test", page_size=1)] == [
        "ann@example.com",
        "bob+x@example.com",
    ]
    assert api.delete_guest("guests.test", "bob+x@example.com") is True
    assert api.delete_guest("guests.test", "bob+x@example.com") is True  # no-op, still 200
    assert [g.email for g in api.list_guests("guests.test")] == ["ann@example.com"]
    expect_error(
        lambda: api.ensure_guest("guests.test", "c@example.com", "owner"),
        BadRequestError,
        "validation_error",
        "Parameter `role` is required to create guest. Possible values: `viewer` or `editor`",
        400,
    )
