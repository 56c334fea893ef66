"""The sandbox over real HTTP, asserted against the Sites API reference: what hangs off a
site, i.e. shared links, goals, custom properties and guests."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from testkit.api_texts import MISSING_SITE_ID
from testkit.sandbox_http import create, error_of
from testkit.sandbox_process import SandboxProcess

# -- shared links ------------------------------------------------------------------------------


def test_shared_link_is_find_or_create(sandbox: SandboxProcess, http: httpx.Client) -> None:
    create(http, "example.com/blog")
    first = http.put(
        "/api/v1/sites/shared-links", json={"site_id": "example.com/blog", "name": "Wordpress"}
    )
    assert first.status_code == 200
    url = first.json()["url"]
    prefix = f"{sandbox.base_url}/share/example.com%2Fblog?auth="
    assert url.startswith(prefix)
    assert len(url) == len(prefix) + 21
    again = http.put(
        "/api/v1/sites/shared-links", data={"site_id": "example.com/blog", "name": "Wordpress"}
    )
    assert again.json() == {"name": "Wordpress", "url": url}


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"site_id": "links.test"}, 400, "Parameter `name` is required to create a shared link"),
        (
            {"site_id": "links.test", "name": "WordPress - Shared Dashboard"},
            400,
            "This name is reserved. Please choose another one",
        ),
        ({"site_id": "links.test", "name": ""}, 400, "can't be blank"),
        ({"site_id": "unknown.test", "name": "x"}, 404, "Site could not be found"),
        ({"name": "x"}, 400, MISSING_SITE_ID),
    ],
)
def test_shared_link_errors(
    http: httpx.Client, payload: dict[str, Any], status: int, message: str
) -> None:
    create(http, "links.test")
    response = http.put("/api/v1/sites/shared-links", json=payload)
    assert (response.status_code, error_of(response)) == (status, message)


def test_shared_link_needs_the_feature_to_create(sandbox: SandboxProcess) -> None:
    team = sandbox.add_team(name="No links", features=["SitesAPI", "StatsAPI"])
    sandbox.add_key(key="nolinks-key", team=team["id"])
    with sandbox.client("nolinks-key") as client:
        create(client, "nolinks.test")
        response = client.put(
            "/api/v1/sites/shared-links", json={"site_id": "nolinks.test", "name": "x"}
        )
    assert (response.status_code, error_of(response)) == (
        402,
        "Your current subscription plan does not include Shared Links",
    )


# -- goals -------------------------------------------------------------------------------------


def test_goal_find_or_create_is_idempotent(sandbox: SandboxProcess, http: httpx.Client) -> None:
    create(http, "goals.test")
    http.put("/api/v1/sites/goals.test", json={"domain": "goals2.test"})
    first = http.put(
        "/api/v1/sites/goals",
        json={"site_id": "goals.test", "goal_type": "event", "event_name": " Signup "},
    )
    body = first.json()
    assert first.status_code == 200
    assert body == {
        "id": body["id"],
        "goal_type": "event",
        "event_name": "Signup",
        "page_path": None,
        "custom_props": {},
        "domain": "goals2.test",
        "display_name": "Signup",
    }
    assert isinstance(body["id"], int)
    again = http.put(
        "/api/v1/sites/goals",
        json={
            "site_id": "goals2.test",
            "goal_type": "event",
            "event_name": "Signup",
            "display_name": "Other",
        },
    )
    assert again.json() == body
    page = http.put(
        "/api/v1/sites/goals",
        data={"site_id": "goals2.test", "goal_type": "page", "page_path": "blog"},
    )
    assert (page.json()["page_path"], page.json()["display_name"]) == ("/blog", "Visit /blog")
    assert len(sandbox.state()["goals"]) == 2


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({}, 400, "Parameter `goal_type` is required to create a goal"),
        ({"goal_type": "event"}, 400, "Parameter `event_name` is required to create a goal"),
        (
            {"goal_type": "event", "event_name": 5},
            400,
            "Parameter `event_name` is required to create a goal",
        ),
        ({"goal_type": "page"}, 400, "Parameter `page_path` is required to create a goal"),
        ({"goal_type": "scroll", "page_path": "/"}, 500, "internal server error"),
        (
            {
                "goal_type": "event",
                "event_name": "A",
                "custom_props": {"a": "1", "b": "2", "c": "3", "d": "4"},
            },
            400,
            "custom_props: use at most 3 properties per goal",
        ),
        (
            {"goal_type": "event", "event_name": "A", "custom_props": {"a": 1}},
            400,
            "custom_props: must be a map with string keys and string values",
        ),
        (
            {"goal_type": "event", "event_name": "A" * 121},
            400,
            "event_name: should be at most 120 character(s)",
        ),
    ],
)
def test_goal_errors(
    http: httpx.Client, payload: dict[str, Any], status: int, message: str
) -> None:
    create(http, "g.test")
    response = http.put("/api/v1/sites/goals", json={"site_id": "g.test", **payload})
    assert (response.status_code, error_of(response)) == (status, message)


def test_goal_limit(sandbox: SandboxProcess, http: httpx.Client) -> None:
    sandbox.configure(max_goals_per_site=1)
    create(http, "limit.test")
    assert (
        http.put(
            "/api/v1/sites/goals",
            json={"site_id": "limit.test", "goal_type": "event", "event_name": "A"},
        ).status_code
        == 200
    )
    response = http.put(
        "/api/v1/sites/goals",
        json={"site_id": "limit.test", "goal_type": "event", "event_name": "B"},
    )
    assert (
        error_of(response)
        == "event_name: Maximum number of goals reached, page_path: Maximum number of goals reached"
    )


def test_goal_list_and_delete(http: httpx.Client) -> None:
    create(http, "del.test")
    ids = [
        http.put(
            "/api/v1/sites/goals",
            json={"site_id": "del.test", "goal_type": "event", "event_name": n},
        ).json()["id"]
        for n in ("A", "B")
    ]
    listed = http.get("/api/v1/sites/goals", params={"site_id": "del.test"}).json()
    assert [g["id"] for g in listed["goals"]] == ids[::-1]
    assert "domain" not in listed["goals"][0]
    deleted = http.delete(f"/api/v1/sites/goals/{ids[0]}", params={"site_id": "del.test"})
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": True})
    again = http.request("DELETE", f"/api/v1/sites/goals/{ids[0]}", json={"site_id": "del.test"})
    assert (again.status_code, error_of(again)) == (404, "Goal could not be found")
    bad = http.delete("/api/v1/sites/goals/abc", params={"site_id": "del.test"})
    assert (bad.status_code, bad.json()) == (400, {"error": "internal server error"})
    missing = http.delete(f"/api/v1/sites/goals/{ids[1]}")
    assert (missing.status_code, error_of(missing)) == (400, MISSING_SITE_ID)


# -- custom props and guests -------------------------------------------------------------------


def test_custom_props(http: httpx.Client) -> None:
    create(http, "props.test")
    for prop in ("title", "author", "title"):
        assert http.put(
            "/api/v1/sites/custom-props", json={"site_id": "props.test", "property": prop}
        ).json() == {"created": True}
    listed = http.get("/api/v1/sites/custom-props", params={"site_id": "props.test"}).json()
    assert listed == {"custom_properties": [{"property": "author"}, {"property": "title"}]}
    assert http.get("/api/v1/sites/props.test").json()["custom_properties"] == ["title", "author"]
    too_long = http.put(
        "/api/v1/sites/custom-props", json={"site_id": "props.test", "property": "x" * 301}
    )
    assert error_of(too_long) == "Parameter `property` is too long"
    deleted = http.delete(
        "/api/v1/sites/custom-props/prop1/with/slashes", params={"site_id": "props.test"}
    )
    assert deleted.json() == {"deleted": True}


def test_guests(http: httpx.Client) -> None:
    create(http, "guests.test")
    invited = http.put(
        "/api/v1/sites/guests",
        json={"site_id": "guests.test", "email": "a@b.test", "role": "viewer"},
    )
    assert invited.json() == {"email": "a@b.test", "role": "viewer", "status": "invited"}
    same = http.put(
        "/api/v1/sites/guests",
        json={"site_id": "guests.test", "email": "a@b.test", "role": "editor"},
    )
    assert same.json() == invited.json()
    bad_role = http.put(
        "/api/v1/sites/guests",
        json={"site_id": "guests.test", "email": "c@b.test", "role": "owner"},
    )
    assert (
        error_of(bad_role)
        == "Parameter `role` is required to create guest. Possible values: `viewer` or `editor`"
    )
    listed = http.get("/api/v1/sites/guests", params={"site_id": "guests.test"}).json()
    assert listed["guests"] == [invited.json()]
    assert http.delete(
        "/api/v1/sites/guests/a@b.test", params={"site_id": "guests.test"}
    ).json() == {"deleted": True}
    assert (
        http.get("/api/v1/sites/guests", params={"site_id": "guests.test"}).json()["guests"] == []
    )
