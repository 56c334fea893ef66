"""The sandbox over real HTTP, asserted against the Sites API reference."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from testkit.sandbox_process import SandboxProcess

INVALID_KEY = (
    "Invalid API key. Please make sure you're using a valid API key with access to the resource "
    "you've requested."
)
MISSING_SITE_ID = (
    "Missing site ID. Please provide the required site_id parameter with your request."
)
TAKEN = (
    "domain: This domain cannot be registered. Perhaps one of your colleagues registered it? "
    "If that's not the case, please contact support@plausible.io\n"
)


@pytest.fixture
def api(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    with sandbox.client() as client:
        yield client


def create(api: httpx.Client, domain: str, **extra: Any) -> httpx.Response:
    return api.post("/api/v1/sites", json={"domain": domain, **extra})


def error_of(response: httpx.Response) -> Any:
    return response.json()["error"]


# -- create site -------------------------------------------------------------------------------


def test_create_site_returns_the_full_shape(api: httpx.Client) -> None:
    response = create(api, "https://www.Example.com/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    config = body.pop("tracker_script_configuration")
    assert body == {"domain": "example.com", "timezone": "Etc/UTC", "custom_properties": []}
    script_id = config.pop("id")
    assert script_id.startswith("pa-")
    assert len(script_id) == 24
    assert config == {
        "installation_type": None,
        "track_404_pages": False,
        "hash_based_routing": False,
        "outbound_links": False,
        "file_downloads": False,
        "revenue_tracking": False,
        "tagged_events": False,
        "form_submissions": False,
        "pageview_props": False,
    }


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "domain: can't be blank"),
        ({"domain": "a.test", "timezone": "d"}, "timezone: is invalid"),
        (
            {"domain": "quero:café.test"},
            "domain: must not contain URI reserved characters :?#[]@!$&'()*+,;=",
        ),
        (
            {"domain": "a b.test"},
            "domain: only letters, numbers, slashes, underscores and period allowed",
        ),
        # The timezone error is added after the blank-domain one, and the last error is reported.
        ({"timezone": "d"}, "timezone: is invalid"),
        ({"domain": 123}, "domain: is invalid"),
        (
            {
                "domain": "a.test",
                "tracker_script_configuration": {"installation_type": "x", "outbound_links": "x"},
            },
            "tracker_script_configuration.installation_type: is invalid",
        ),
    ],
)
def test_create_site_validation_errors(
    sandbox: SandboxProcess, api: httpx.Client, payload: dict[str, Any], message: str
) -> None:
    response = api.post("/api/v1/sites", json=payload)
    assert (response.status_code, error_of(response)) == (400, message)
    assert sandbox.state()["sites"] == []


def test_create_site_twice_gives_the_taken_message_with_its_newline(api: httpx.Client) -> None:
    assert create(api, "example.com").status_code == 200
    again = create(api, "WWW.example.com")
    assert again.status_code == 400
    assert again.json() == {"error": TAKEN}


def test_create_site_with_an_over_long_domain_is_a_500(api: httpx.Client) -> None:
    response = create(api, "a" * 252 + ".com")
    assert (response.status_code, response.json()) == (500, {"error": "internal server error"})


def test_create_site_accepts_form_and_multipart_bodies_with_brackets(
    sandbox: SandboxProcess, api: httpx.Client
) -> None:
    form = api.post(
        "/api/v1/sites",
        data={
            "domain": "form.test",
            "timezone": "Europe/Berlin",
            "tracker_script_configuration[outbound_links]": "true",
        },
    )
    assert form.status_code == 200
    assert form.json()["tracker_script_configuration"]["outbound_links"] is True
    multipart = api.post(
        "/api/v1/sites",
        files={
            "domain": (None, "multi.test"),
            "tracker_script_configuration[file_downloads]": (None, "true"),
        },
    )
    assert multipart.status_code == 200
    assert multipart.json()["tracker_script_configuration"]["file_downloads"] is True
    goals = {(g["domain"], g["event_name"]) for g in sandbox.state()["goals"]}
    assert goals == {("form.test", "Outbound Link: Click"), ("multi.test", "File Download")}


def test_query_params_count_and_body_beats_query(api: httpx.Client) -> None:
    response = api.post(
        "/api/v1/sites?domain=query.test&timezone=Europe/Paris", json={"domain": "body.test"}
    )
    assert response.json()["domain"] == "body.test"
    assert response.json()["timezone"] == "Europe/Paris"


def test_site_limit_gives_402(sandbox: SandboxProcess) -> None:
    team = sandbox.add_team(name="Small", site_limit=1)
    sandbox.add_key(key="small-key", team=team["id"])
    with sandbox.client("small-key") as client:
        assert create(client, "one.test").status_code == 200
        response = create(client, "two.test")
    assert response.status_code == 402
    assert error_of(response) == (
        "Your account has reached the limit of 1 sites. To unlock more sites, please upgrade your subscription."
    )


def test_viewer_cannot_create_sites(sandbox: SandboxProcess) -> None:
    sandbox.add_key(key="viewer-key", role="viewer")
    with sandbox.client("viewer-key") as client:
        response = create(client, "view.test")
    assert (response.status_code, error_of(response)) == (
        403,
        "You can't add sites to the selected team.",
    )


# -- delete site -------------------------------------------------------------------------------


def test_delete_site_returns_boolean_true_and_then_404(
    sandbox: SandboxProcess, api: httpx.Client
) -> None:
    create(api, "gone.test")
    api.put(
        "/api/v1/sites/goals",
        json={"site_id": "gone.test", "goal_type": "event", "event_name": "A"},
    )
    response = api.delete("/api/v1/sites/gone.test")
    assert (response.status_code, response.json()) == (200, {"deleted": True})
    assert sandbox.state()["sites"] == []
    assert sandbox.state()["goals"] == []
    again = api.delete("/api/v1/sites/gone.test")
    assert (again.status_code, error_of(again)) == (404, "Site could not be found")


def test_delete_site_needs_the_owner_role(sandbox: SandboxProcess, api: httpx.Client) -> None:
    create(api, "kept.test")
    sandbox.add_key(key="admin-key", role="admin")
    with sandbox.client("admin-key") as client:
        response = client.delete("/api/v1/sites/kept.test")
    assert (response.status_code, error_of(response)) == (404, "Site could not be found")


def test_delete_site_by_old_domain_and_domain_with_slash(api: httpx.Client) -> None:
    create(api, "old.test")
    assert api.put("/api/v1/sites/old.test", json={"domain": "new.test"}).status_code == 200
    assert api.delete("/api/v1/sites/old.test").json() == {"deleted": True}
    create(api, "example.com/blog")
    assert api.delete("/api/v1/sites/example.com%2Fblog").json() == {"deleted": True}


# -- get / update site -------------------------------------------------------------------------


def test_update_site_changes_domain_and_keeps_old_one_usable(api: httpx.Client) -> None:
    create(api, "before.test")
    changed = api.put(
        "/api/v1/sites/before.test",
        json={"domain": "after.test", "tracker_script_configuration": {"installation_type": "npm"}},
    )
    assert changed.status_code == 200
    assert changed.json()["domain"] == "after.test"
    assert changed.json()["tracker_script_configuration"]["installation_type"] == "npm"
    assert api.get("/api/v1/sites/before.test").json()["domain"] == "after.test"
    same = api.put("/api/v1/sites/after.test", json={"domain": "after.test"})
    assert error_of(same) == "domain: New domain must be different than the current one"
    empty = api.put("/api/v1/sites/after.test", json={})
    assert (
        error_of(empty)
        == "Payload must contain at least one of the parameters 'domain', 'tracker_script_configuration'"
    )
    invalid = api.put("/api/v1/sites/after.test", json={"domain": 123})
    assert (invalid.status_code, error_of(invalid)) == (400, "domain: is invalid")


def test_failed_config_update_rolls_back_the_domain_change(api: httpx.Client) -> None:
    create(api, "stay.test")
    response = api.put(
        "/api/v1/sites/stay.test",
        json={"domain": "moved.test", "tracker_script_configuration": {"tagged_events": "nope"}},
    )
    assert (response.status_code, error_of(response)) == (
        400,
        "tracker_script_configuration.tagged_events: is invalid",
    )
    assert api.get("/api/v1/sites/stay.test").json()["domain"] == "stay.test"


def test_lists_are_newest_first_and_paginated(api: httpx.Client) -> None:
    for name in ("a.test", "b.test", "c.test"):
        create(api, name)
    first = api.get("/api/v1/sites", params={"limit": "2"}).json()
    assert [s["domain"] for s in first["sites"]] == ["c.test", "b.test"]
    assert first["meta"]["before"] is None
    assert first["meta"]["limit"] == 2
    second = api.get("/api/v1/sites", params={"limit": "2", "after": first["meta"]["after"]}).json()
    assert second["sites"] == [{"domain": "a.test", "timezone": "Etc/UTC"}]
    assert second["meta"]["after"] is None
    assert isinstance(second["meta"]["before"], str)
    assert api.get("/api/v1/sites", params={"limit": "500"}).json()["meta"]["limit"] == 100
    assert api.get("/api/v1/sites", params={"limit": "x"}).status_code == 500
    assert api.get("/api/v1/sites", params={"after": "%%%"}).json() == {
        "error": "internal server error"
    }


def test_teams_list_shows_the_key_team_and_stats_availability(api: httpx.Client) -> None:
    body = api.get("/api/v1/sites/teams").json()
    assert len(body["teams"]) == 1
    assert body["teams"][0]["api_available"] is True
    assert body["meta"] == {"after": None, "before": None, "limit": 100}


# -- shared links ------------------------------------------------------------------------------


def test_shared_link_is_find_or_create(sandbox: SandboxProcess, api: httpx.Client) -> None:
    create(api, "example.com/blog")
    first = api.put(
        "/api/v1/sites/shared-links", json={"site_id": "example.com/blog", "name": "Wordpress"}
    )
    assert first.status_code == 200
    url = first.json()["url"]
    prefix = f"{sandbox.base_url}/share/example.com%2Fblog?auth="
    assert url.startswith(prefix)
    assert len(url) == len(prefix) + 21
    again = api.put(
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
    api: httpx.Client, payload: dict[str, Any], status: int, message: str
) -> None:
    create(api, "links.test")
    response = api.put("/api/v1/sites/shared-links", json=payload)
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


def test_goal_find_or_create_is_idempotent(sandbox: SandboxProcess, api: httpx.Client) -> None:
    create(api, "goals.test")
    api.put("/api/v1/sites/goals.test", json={"domain": "goals2.test"})
    first = api.put(
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
    again = api.put(
        "/api/v1/sites/goals",
        json={
            "site_id": "goals2.test",
            "goal_type": "event",
            "event_name": "Signup",
            "display_name": "Other",
        },
    )
    assert again.json() == body
    page = api.put(
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
def test_goal_errors(api: httpx.Client, payload: dict[str, Any], status: int, message: str) -> None:
    create(api, "g.test")
    response = api.put("/api/v1/sites/goals", json={"site_id": "g.test", **payload})
    assert (response.status_code, error_of(response)) == (status, message)


def test_goal_limit(sandbox: SandboxProcess, api: httpx.Client) -> None:
    sandbox.configure(max_goals_per_site=1)
    create(api, "limit.test")
    assert (
        api.put(
            "/api/v1/sites/goals",
            json={"site_id": "limit.test", "goal_type": "event", "event_name": "A"},
        ).status_code
        == 200
    )
    response = api.put(
        "/api/v1/sites/goals",
        json={"site_id": "limit.test", "goal_type": "event", "event_name": "B"},
    )
    assert (
        error_of(response)
        == "event_name: Maximum number of goals reached, page_path: Maximum number of goals reached"
    )


def test_goal_list_and_delete(api: httpx.Client) -> None:
    create(api, "del.test")
    ids = [
        api.put(
            "/api/v1/sites/goals",
            json={"site_id": "del.test", "goal_type": "event", "event_name": n},
        ).json()["id"]
        for n in ("A", "B")
    ]
    listed = api.get("/api/v1/sites/goals", params={"site_id": "del.test"}).json()
    assert [g["id"] for g in listed["goals"]] == ids[::-1]
    assert "domain" not in listed["goals"][0]
    deleted = api.delete(f"/api/v1/sites/goals/{ids[0]}", params={"site_id": "del.test"})
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": True})
    again = api.request("DELETE", f"/api/v1/sites/goals/{ids[0]}", json={"site_id": "del.test"})
    assert (again.status_code, error_of(again)) == (404, "Goal could not be found")
    bad = api.delete("/api/v1/sites/goals/abc", params={"site_id": "del.test"})
    assert (bad.status_code, bad.json()) == (400, {"error": "internal server error"})
    missing = api.delete(f"/api/v1/sites/goals/{ids[1]}")
    assert (missing.status_code, error_of(missing)) == (400, MISSING_SITE_ID)


# -- custom props and guests -------------------------------------------------------------------


def test_custom_props(api: httpx.Client) -> None:
    create(api, "props.test")
    for prop in ("title", "author", "title"):
        assert api.put(
            "/api/v1/sites/custom-props", json={"site_id": "props.test", "property": prop}
        ).json() == {"created": True}
    listed = api.get("/api/v1/sites/custom-props", params={"site_id": "props.test"}).json()
    assert listed == {"custom_properties": [{"property": "author"}, {"property": "title"}]}
    assert api.get("/api/v1/sites/props.test").json()["custom_properties"] == ["title", "author"]
    too_long = api.put(
        "/api/v1/sites/custom-props", json={"site_id": "props.test", "property": "x" * 301}
    )
    assert error_of(too_long) == "Parameter `property` is too long"
    deleted = api.delete(
        "/api/v1/sites/custom-props/prop1/with/slashes", params={"site_id": "props.test"}
    )
    assert deleted.json() == {"deleted": True}


def test_guests(api: httpx.Client) -> None:
    create(api, "guests.test")
    invited = api.put(
        "/api/v1/sites/guests",
        json={"site_id": "guests.test", "email": "a@b.test", "role": "viewer"},
    )
    assert invited.json() == {"email": "a@b.test", "role": "viewer", "status": "invited"}
    same = api.put(
        "/api/v1/sites/guests",
        json={"site_id": "guests.test", "email": "a@b.test", "role": "editor"},
    )
    assert same.json() == invited.json()
    bad_role = api.put(
        "/api/v1/sites/guests",
        json={"site_id": "guests.test", "email": "c@b.test", "role": "owner"},
    )
    assert (
        error_of(bad_role)
        == "Parameter `role` is required to create guest. Possible values: `viewer` or `editor`"
    )
    listed = api.get("/api/v1/sites/guests", params={"site_id": "guests.test"}).json()
    assert listed["guests"] == [invited.json()]
    assert api.delete(
        "/api/v1/sites/guests/a@b.test", params={"site_id": "guests.test"}
    ).json() == {"deleted": True}
    assert api.get("/api/v1/sites/guests", params={"site_id": "guests.test"}).json()["guests"] == []


# -- framework errors and the auth plug --------------------------------------------------------


def test_framework_errors(api: httpx.Client) -> None:
    bad_json = api.post("/api/v1/sites", content=b"{", headers={"content-type": "application/json"})
    assert (bad_json.status_code, bad_json.json()) == (
        400,
        {"message": "Bad Request", "status": 400},
    )
    unknown = api.get("/api/v1/nothing")
    assert (unknown.status_code, unknown.json()) == (404, {"message": "Not Found", "status": 404})
    assert api.patch("/api/v1/sites/x.test").status_code == 404
    html = api.get("/api/v1/sites", headers={"accept": "text/html"})
    assert html.status_code == 406
    array = api.post("/api/v1/sites", json=["example.com"])
    assert error_of(array) == "domain: can't be blank"


def test_auth_pipeline_order(sandbox: SandboxProcess, api: httpx.Client) -> None:
    missing = httpx.get(
        f"{sandbox.base_url}/api/v1/sites", headers={"authorization": "bearer test-key"}
    )
    assert (missing.status_code, error_of(missing)) == (
        401,
        "Missing API key. Please use a valid Plausible API key as a Bearer Token.",
    )
    # Site ID is checked before the key is even looked up.
    no_site = httpx.get(
        f"{sandbox.base_url}/api/v1/sites/goals", headers={"authorization": "Bearer bogus"}
    )
    assert (no_site.status_code, error_of(no_site)) == (400, MISSING_SITE_ID)
    bogus = httpx.get(f"{sandbox.base_url}/api/v1/sites", headers={"authorization": "Bearer bogus"})
    assert (bogus.status_code, error_of(bogus)) == (401, INVALID_KEY)
    create(api, "mine.test")
    with sandbox.client("stats-key") as stats:
        assert stats.get("/api/v1/sites/mine.test").status_code == 200
        refused = create(stats, "stats.test")
        assert (refused.status_code, error_of(refused)) == (401, INVALID_KEY)
    with sandbox.client("other-team-key") as other:
        foreign = other.delete("/api/v1/sites/mine.test")
        assert (foreign.status_code, error_of(foreign)) == (401, INVALID_KEY)
        assert other.get("/api/v1/sites/unknown.test").status_code == 404


def test_locked_team_and_missing_feature_give_402(sandbox: SandboxProcess) -> None:
    locked = sandbox.add_team(name="Locked", locked=True)
    sandbox.add_key(key="locked-key", team=locked["id"])
    no_api = sandbox.add_team(name="No API", features=["StatsAPI"])
    sandbox.add_key(key="noapi-key", team=no_api["id"])
    with sandbox.client("locked-key") as client:
        response = create(client, "locked.test")
    assert response.status_code == 402
    assert error_of(response).startswith(
        "This Plausible site is locked due to missing active subscription."
    )
    with sandbox.client("noapi-key") as client:
        response = create(client, "noapi.test")
    assert (response.status_code, error_of(response)) == (
        402,
        "The account that owns this API key does not have access to Sites API. Please make sure you're "
        "using the API key of a subscriber account and that the subscription plan includes Sites API",
    )


# -- rate limits -------------------------------------------------------------------------------

HOURLY = (
    "Too many API requests. The limit is 3 per hour. Please contact us to request more capacity."
)
BURST = "Too many API requests in a short period of time. The limit is 1 per 1000000 seconds. Please throttle your requests."


def test_hourly_limit_counts_burst_rejections_and_is_shared_by_the_team(
    sandbox: SandboxProcess, api: httpx.Client
) -> None:
    sandbox.configure(
        hourly_limit=3, burst_limit=1, burst_seconds=1_000_000, hour_seconds=1_000_000_000
    )
    sandbox.add_key(key="second-key")
    assert api.get("/api/v1/sites").status_code == 200
    with sandbox.client("second-key") as second:
        assert second.get("/api/v1/sites").json() == {"error": BURST}
    assert error_of(api.get("/api/v1/sites")) == BURST
    fourth = api.get("/api/v1/sites")
    assert (fourth.status_code, fourth.json()) == (429, {"error": HOURLY})
    assert not any(h.lower().startswith(("retry-after", "x-ratelimit")) for h in fourth.headers)
    with sandbox.client("other-team-key") as other:
        assert other.get("/api/v1/sites").status_code == 200
    assert sandbox.state()["counters"]["rate_limited"] == 3


def test_invalid_keys_and_missing_site_ids_are_not_counted(
    sandbox: SandboxProcess, api: httpx.Client
) -> None:
    sandbox.configure(hourly_limit=1, hour_seconds=1_000_000_000)
    httpx.get(f"{sandbox.base_url}/api/v1/sites", headers={"authorization": "Bearer bogus"})
    api.get("/api/v1/sites/goals")
    assert api.get("/api/v1/sites").status_code == 200
    assert api.get("/api/v1/sites").status_code == 429


def test_hourly_window_rolls_over(sandbox: SandboxProcess, api: httpx.Client) -> None:
    sandbox.configure(hourly_limit=1, hour_seconds=0.5)
    statuses: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (429 in statuses and statuses[-1] == 200):
        statuses.append(api.get("/api/v1/sites").status_code)
    assert 429 in statuses
    assert statuses[-1] == 200


def test_a_clock_offset_moves_the_windows_and_the_request_log_records_sandbox_time() -> None:
    from sandbox.api import SandboxAPI
    from sandbox.http import Request
    from sandbox.state import Settings

    host = [9_999.8]  # 0.2 s before a burst boundary by the host's clock
    api = SandboxAPI(
        settings=Settings(burst_limit=1, burst_seconds=10, clock_offset_ms=500),
        clock=lambda: host[0],
    )
    api.add_key("k", api.add_team("T"))
    headers = [("authorization", "Bearer k"), ("accept", "application/json")]

    def status() -> int:
        return api.handle(Request("GET", "/api/v1/sites", headers=headers)).status

    assert status() == 200  # counted at 10_000.3: the sandbox is already in the next window
    host[0] = 9_999.9
    assert status() == 429  # same sandbox window, although the host is still in the old one
    host[0] = 10_009.6
    assert status() == 200  # 10_010.1 for the sandbox: a new window
    log = api.requests
    assert [(round(t, 1), code) for t, code, _ in log] == [
        (10_000.3, 200),
        (10_000.4, 429),
        (10_010.1, 200),
    ]
    assert {bucket for _, _, bucket in log} == {f"api_request:team:{api.world.teams[1].identifier}"}


def test_the_request_log_is_served_from_a_given_time(
    sandbox: SandboxProcess, api: httpx.Client
) -> None:
    start = time.time()
    assert api.get("/api/v1/sites").status_code == 200
    log = sandbox.admin.get("/_sandbox/requests", params={"since": start - 1}).json()["requests"]
    assert [entry[1] for entry in log] == [200]
    later = sandbox.admin.get("/_sandbox/requests", params={"since": time.time() + 60}).json()
    assert later == {"requests": []}


# -- fault injection ---------------------------------------------------------------------------


def test_fail_rate_answers_500_and_changes_nothing(
    sandbox: SandboxProcess, api: httpx.Client
) -> None:
    sandbox.configure(fail_rate=1.0)
    response = create(api, "fail.test")
    assert (response.status_code, response.json()) == (500, {"error": "internal server error"})
    state = sandbox.state()
    assert state["sites"] == []
    assert state["counters"]["failed_injected"] == 1
    # Faults never touch the admin routes.
    assert sandbox.admin.get("/_sandbox/health").json() == {"status": "ok"}


def test_drop_rate_applies_the_change_then_closes_without_answering(
    sandbox: SandboxProcess, api: httpx.Client
) -> None:
    sandbox.configure(drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        create(api, "dropped.test")
    state = sandbox.state()
    assert [s["domain"] for s in state["sites"]] == ["dropped.test"]
    assert state["counters"]["dropped"] == 1


@pytest.fixture(scope="module")
def seeded() -> Iterator[SandboxProcess]:
    with SandboxProcess(extra_args=["--seed", "7", "--fail-rate", "0.5"]) as process:
        yield process


def test_faults_repeat_with_a_seed(seeded: SandboxProcess) -> None:
    def run() -> list[int]:
        seeded.reset()
        with seeded.client() as client:
            return [client.get("/api/v1/sites").status_code for _ in range(20)]

    first = run()
    assert {200, 500} <= set(first)
    assert run() == first


def test_admin_config_rejects_unknown_settings(sandbox: SandboxProcess) -> None:
    response = sandbox.admin.post("/_sandbox/config", json={"speed": 1})
    assert (response.status_code, response.json()) == (400, {"error": "unknown setting: speed"})


def test_embedded_sandbox_serves_in_a_thread() -> None:
    from sandbox.api import SandboxAPI
    from sandbox.server import start_in_thread

    api = SandboxAPI(seed=1)
    api.add_key("embedded-key", api.add_team("Embedded"))
    handle = start_in_thread(api)
    try:
        headers = {"authorization": "Bearer embedded-key"}
        created = httpx.post(
            f"{handle.url}/api/v1/sites", json={"domain": "in.test"}, headers=headers
        )
        link = httpx.put(
            f"{handle.url}/api/v1/sites/shared-links",
            json={"site_id": "in.test", "name": "n"},
            headers=headers,
        )
    finally:
        handle.stop()
    assert created.status_code == 200
    assert link.json()["url"].startswith(f"{handle.url}/share/in.test?auth=")


# -- sites made in the UI, consolidated views, legacy keys and memberships (§3, §4, §7.3) ------

NO_SITES_API = (
    "The account that owns this API key does not have access to Sites API. Please make sure you're "
    "using the API key of a subscriber account and that the subscription plan includes Sites API"
)
CONSOLIDATED = "This operation is unavailable for a consolidated view"
NOT_FOUND = "Site could not be found"


def default_team(sandbox: SandboxProcess) -> str:
    team: str = sandbox.state()["teams"][0]["id"]
    return team


def seed_operations(client: httpx.Client, domain: str) -> dict[str, httpx.Response]:
    """The four seed operations on an existing site (create aside), keyed by name."""
    return {
        "shared_link": client.put(
            "/api/v1/sites/shared-links", json={"site_id": domain, "name": "n"}
        ),
        "goal": client.put(
            "/api/v1/sites/goals", json={"site_id": domain, "goal_type": "event", "event_name": "E"}
        ),
        "delete_goal": client.delete("/api/v1/sites/goals/1", params={"site_id": domain}),
        "delete_site": client.delete(f"/api/v1/sites/{domain}"),
    }


def outcomes(responses: dict[str, httpx.Response]) -> dict[str, tuple[int, Any]]:
    return {name: (r.status_code, r.json()) for name, r in responses.items()}


def test_admin_site_in_a_team_without_sites_api_gives_402_to_that_teams_key(
    sandbox: SandboxProcess,
) -> None:
    team = sandbox.add_team(name="Stats only", features=["StatsAPI", "SharedLinks", "Props"])
    placed = sandbox.add_site(
        domain="https://www.UI.test/", team=team["id"], timezone="Europe/Berlin"
    )
    assert (placed["domain"], placed["timezone"], placed["team"]) == (
        "ui.test",
        "Europe/Berlin",
        team["id"],
    )
    sandbox.add_key(key="stats-only-key", team=team["id"])
    with sandbox.client("stats-only-key") as client:
        responses = seed_operations(client, "ui.test")
        # Read routes need the Stats API instead, which this team has.
        assert client.get("/api/v1/sites/ui.test").json()["domain"] == "ui.test"
    assert outcomes(responses) == dict.fromkeys(responses, (402, {"error": NO_SITES_API}))
    assert [s["domain"] for s in sandbox.state()["sites"]] == ["ui.test"]


def test_admin_site_rejects_bad_input(sandbox: SandboxProcess) -> None:
    team = default_team(sandbox)
    sandbox.add_site(domain="taken.test", team=team)
    for payload, message in [
        ({"domain": "taken.test", "team": team}, "domain is taken"),
        ({"domain": "x.test", "team": "nope"}, "unknown team"),
        (
            {"domain": "a b.test", "team": team},
            "domain: only letters, numbers, slashes, underscores and period allowed",
        ),
        ({"domain": "x.test", "team": team, "timezone": "d"}, "timezone must be a valid IANA name"),
        (
            {"domain": "x.test", "team": team, "consolidated": "yes"},
            "consolidated must be a boolean",
        ),
    ]:
        response = sandbox.admin.post("/_sandbox/sites", json=payload)
        assert (response.status_code, response.json()) == (400, {"error": message})


def test_admin_site_old_domain_resolves(sandbox: SandboxProcess, api: httpx.Client) -> None:
    sandbox.add_site(
        domain="renamed.test", team=default_team(sandbox), domain_changed_from="original.test"
    )
    assert api.get("/api/v1/sites/original.test").json()["domain"] == "renamed.test"
    # Another team may not take the old domain during the 72 hours.
    with sandbox.client("other-team-key") as other:
        assert create(other, "original.test").json() == {"error": TAKEN}


def test_consolidated_view_is_400_on_every_site_route_before_key_checks(
    sandbox: SandboxProcess, api: httpx.Client
) -> None:
    view = "6f1c2a4e-0000-4000-8000-000000000001"
    sandbox.add_site(domain=view, team=default_team(sandbox), consolidated=True)
    create(api, "regular.test")
    expected = (400, {"error": CONSOLIDATED})
    assert outcomes(seed_operations(api, view)) == dict.fromkeys(
        ["shared_link", "goal", "delete_goal", "delete_site"], expected
    )
    for response in (
        api.get(f"/api/v1/sites/{view}"),
        api.put(f"/api/v1/sites/{view}", json={"domain": "new.test"}),
        api.get("/api/v1/sites/goals", params={"site_id": view}),
        api.put("/api/v1/sites/custom-props", json={"site_id": view, "property": "p"}),
        api.delete("/api/v1/sites/guests/a@b.test", params={"site_id": view}),
    ):
        assert (response.status_code, response.json()) == expected
    # 7a comes before the key's team is compared: another team's key gets the 400 too.
    with sandbox.client("other-team-key") as other:
        foreign = other.delete(f"/api/v1/sites/{view}")
    assert (foreign.status_code, foreign.json()) == expected
    assert [s["domain"] for s in api.get("/api/v1/sites").json()["sites"]] == ["regular.test"]
    assert len(sandbox.state()["sites"]) == 2


def test_guest_editor_on_a_foreign_team_without_sites_api_gets_402(sandbox: SandboxProcess) -> None:
    """§7.6 / §11 item 13: the guest passes 7c (legacy key) and meets 7e."""
    foreign = sandbox.add_team(name="Foreign", features=["StatsAPI"])
    sandbox.add_site(domain="foreign.test", team=foreign["id"])
    sandbox.add_legacy_key("guest-key", "gail")
    guest = sandbox.add_membership(user="gail", site="foreign.test", role="editor")
    assert guest == {"user": "gail", "site": "foreign.test", "role": "editor", "guest": True}
    with sandbox.client("guest-key") as client:
        response = client.delete("/api/v1/sites/foreign.test")
    assert (response.status_code, error_of(response)) == (402, NO_SITES_API)
    assert [s["domain"] for s in sandbox.state()["sites"]] == ["foreign.test"]


def test_guest_roles_decide_in_the_controller(sandbox: SandboxProcess) -> None:
    team = default_team(sandbox)
    sandbox.add_site(domain="hosted.test", team=team)
    sandbox.add_legacy_key("editor-guest-key", "edith")
    sandbox.add_membership(user="edith", site="hosted.test", role="editor")
    sandbox.add_legacy_key("viewer-guest-key", "vic")
    sandbox.add_membership(user="vic", site="hosted.test", role="viewer")
    sandbox.add_legacy_key("stranger-key", "stan")
    with sandbox.client("editor-guest-key") as editor:
        goal = editor.put(
            "/api/v1/sites/goals",
            json={"site_id": "hosted.test", "goal_type": "event", "event_name": "E"},
        )
        assert goal.status_code == 200
        link = editor.put(
            "/api/v1/sites/shared-links", json={"site_id": "hosted.test", "name": "n"}
        )
        assert link.status_code == 200
        # Delete is owner only: a guest editor is told the site does not exist.
        deleted = editor.delete("/api/v1/sites/hosted.test")
        assert (deleted.status_code, error_of(deleted)) == (404, NOT_FOUND)
        assert [s["domain"] for s in editor.get("/api/v1/sites").json()["sites"]] == ["hosted.test"]
    with sandbox.client("viewer-guest-key") as viewer:
        assert (
            viewer.get("/api/v1/sites/goals", params={"site_id": "hosted.test"}).status_code == 200
        )
        refused = viewer.put(
            "/api/v1/sites/goals",
            json={"site_id": "hosted.test", "goal_type": "event", "event_name": "E"},
        )
        assert (refused.status_code, error_of(refused)) == (404, NOT_FOUND)
        gone = viewer.delete(
            f"/api/v1/sites/goals/{goal.json()['id']}", params={"site_id": "hosted.test"}
        )
        assert (gone.status_code, error_of(gone)) == (404, NOT_FOUND)
    with sandbox.client("stranger-key") as stranger:
        # Not a member at all: 7g.
        assert outcomes(seed_operations(stranger, "hosted.test")) == dict.fromkeys(
            ["shared_link", "goal", "delete_goal", "delete_site"], (401, {"error": INVALID_KEY})
        )
        assert stranger.get("/api/v1/sites").json()["sites"] == []


def test_team_roles_below_owner_get_404_on_delete_and_viewers_on_writes(
    sandbox: SandboxProcess, api: httpx.Client
) -> None:
    create(api, "roles.test")
    goal_id = api.put(
        "/api/v1/sites/goals",
        json={"site_id": "roles.test", "goal_type": "event", "event_name": "E"},
    ).json()["id"]
    team = default_team(sandbox)
    sandbox.add_key(key="editor-key", team=team, role="editor")
    sandbox.add_legacy_key("legacy-editor-key", "ed")
    sandbox.add_membership(user="ed", team=team, role="editor")
    sandbox.add_key(key="viewer-key", team=team, role="viewer")
    sandbox.add_key(key="billing-key", team=team, role="billing")
    for key in ("editor-key", "legacy-editor-key"):
        with sandbox.client(key) as editor:
            response = editor.delete("/api/v1/sites/roles.test")
        assert (response.status_code, error_of(response)) == (404, NOT_FOUND)
    for key in ("viewer-key", "billing-key"):
        with sandbox.client(key) as low:
            answers = outcomes(seed_operations(low, "roles.test"))
        assert answers == dict.fromkeys(answers, (404, {"error": NOT_FOUND}))
    with sandbox.client("viewer-key") as viewer:
        assert (
            viewer.get("/api/v1/sites/goals", params={"site_id": "roles.test"}).json()["goals"][0][
                "id"
            ]
            == goal_id
        )
    sandbox.add_legacy_key("legacy-owner-key", "olga")
    sandbox.add_membership(user="olga", team=team, role="owner")
    with sandbox.client("legacy-owner-key") as owner:
        assert owner.delete("/api/v1/sites/roles.test").json() == {"deleted": True}


# -- create site with a legacy key (§7.3 step 1) --------------------------------------------------


def test_legacy_create_without_team_id_uses_a_new_personal_trial_team(
    sandbox: SandboxProcess,
) -> None:
    sandbox.add_legacy_key("legacy-key", "pat")
    with sandbox.client("legacy-key") as client:
        assert client.get("/api/v1/sites/teams").json()["teams"] == []
        first = create(client, "personal.test")
        assert first.status_code == 200
        assert create(client, "second.test").status_code == 200
        teams = client.get("/api/v1/sites/teams").json()["teams"]
        # The trial has every feature but the Sites API, so the plug refuses the next steps (7e).
        answers = outcomes(seed_operations(client, "personal.test"))
        listed = client.get("/api/v1/sites").json()["sites"]
    state = sandbox.state()
    personal = [t for t in state["teams"] if not t["setup"]]
    assert len(personal) == 1
    assert personal[0]["name"] == "My personal sites"
    assert "SitesAPI" not in personal[0]["features"]
    assert personal[0]["site_limit"] == 10
    assert {s["team"] for s in state["sites"]} == {personal[0]["id"]}
    assert teams == [{"id": personal[0]["id"], "name": "My personal sites", "api_available": True}]
    assert answers == dict.fromkeys(answers, (402, {"error": NO_SITES_API}))
    assert [s["domain"] for s in listed] == ["second.test", "personal.test"]
    assert next(u for u in state["users"] if u["name"] == "pat")["teams"] == {
        personal[0]["id"]: "owner"
    }


def test_legacy_create_failure_rolls_back_the_personal_team(sandbox: SandboxProcess) -> None:
    sandbox.add_legacy_key("legacy-key", "pat")
    teams_before = sandbox.state()["teams"]
    with sandbox.client("legacy-key") as client:
        response = create(client, "bad domain")
    assert (response.status_code, error_of(response)) == (
        400,
        "domain: only letters, numbers, slashes, underscores and period allowed",
    )
    assert sandbox.state()["teams"] == teams_before


def test_legacy_create_with_several_personal_teams_needs_team_id(sandbox: SandboxProcess) -> None:
    sandbox.add_legacy_key("legacy-key", "pat")
    for name in ("One", "Two"):
        team = sandbox.add_team(name=name, setup=False)
        sandbox.add_membership(user="pat", team=team["id"], role="owner")
    with sandbox.client("legacy-key") as client:
        response = create(client, "which.test")
        chosen = create(client, "chosen.test", team_id=team["id"])
    assert (response.status_code, error_of(response)) == (
        400,
        "You must select a team with 'team_id' parameter.",
    )
    assert chosen.status_code == 200
    assert [(s["domain"], s["team"]) for s in sandbox.state()["sites"]] == [
        ("chosen.test", team["id"])
    ]


def test_legacy_create_with_team_id_checks_the_team(sandbox: SandboxProcess) -> None:
    viewed = sandbox.add_team(name="Viewed")
    unpaid = sandbox.add_team(name="Unpaid", features=["StatsAPI"])
    edited = sandbox.add_team(name="Edited")
    stranger = sandbox.add_team(name="Stranger")
    sandbox.add_legacy_key("legacy-key", "pat")
    sandbox.add_membership(user="pat", team=viewed["id"], role="viewer")
    sandbox.add_membership(user="pat", team=unpaid["id"], role="viewer")
    sandbox.add_membership(user="pat", team=edited["id"], role="editor")
    with sandbox.client("legacy-key") as client:
        forbidden = create(client, "a.test", team_id=viewed["id"])
        # §11 item 8: the plug's feature check (step 8) comes before the controller's role check.
        no_feature = create(client, "a.test", team_id=unpaid["id"])
        not_member = create(client, "a.test", team_id=stranger["id"])
        upper_case = create(client, "upper.test", team_id=edited["id"].upper())
        # A JSON integer is looked up by the internal id.
        by_number = create(client, "number.test", team_id=edited["internal_id"])
        sites_of_edited = client.get("/api/v1/sites", params={"team_id": edited["id"]}).json()[
            "sites"
        ]
    assert (forbidden.status_code, error_of(forbidden)) == (
        403,
        "You can't add sites to the selected team.",
    )
    assert (no_feature.status_code, error_of(no_feature)) == (402, NO_SITES_API)
    assert (not_member.status_code, error_of(not_member)) == (401, INVALID_KEY)
    assert (upper_case.status_code, by_number.status_code) == (200, 200)
    assert [(s["domain"], s["team"]) for s in sandbox.state()["sites"]] == [
        ("upper.test", edited["id"]),
        ("number.test", edited["id"]),
    ]
    assert [s["domain"] for s in sites_of_edited] == ["number.test", "upper.test"]


@pytest.mark.parametrize("team_id", ["not-a-uuid", "00000000-0000-4000-8000-000000000000", 987654])
def test_legacy_create_ignores_unknown_team_ids(sandbox: SandboxProcess, team_id: Any) -> None:
    sandbox.add_legacy_key("legacy-key", "pat")
    with sandbox.client("legacy-key") as client:
        response = create(client, "fallback.test", team_id=team_id)
    assert response.status_code == 200
    state = sandbox.state()
    personal = next(t for t in state["teams"] if not t["setup"])
    assert state["sites"][0]["team"] == personal["id"]


def test_team_scoped_keys_ignore_team_id(sandbox: SandboxProcess, api: httpx.Client) -> None:
    other = next(t for t in sandbox.state()["teams"] if t["name"] == "Other team")
    assert create(api, "own.test", team_id=other["id"]).status_code == 200
    assert sandbox.state()["sites"][0]["team"] == default_team(sandbox)


# -- legacy rate-limit buckets (§4) ---------------------------------------------------------------

LEGACY_HOURLY = (
    "Too many API requests. The limit is 2 per hour. Please contact us to request more capacity."
)


def test_legacy_keys_share_their_users_hourly_bucket(sandbox: SandboxProcess) -> None:
    sandbox.configure(legacy_hourly_limit=2, hourly_limit=100, hour_seconds=1_000_000_000)
    sandbox.add_legacy_key("pat-1", "pat")
    sandbox.add_legacy_key("pat-2", "pat")
    sandbox.add_legacy_key("sam-1", "sam")
    with (
        sandbox.client("pat-1") as first,
        sandbox.client("pat-2") as second,
        sandbox.client("sam-1") as sam,
    ):
        assert first.get("/api/v1/sites").status_code == 200
        # An unknown site on a site-context route still counts against the user.
        assert (
            second.put(
                "/api/v1/sites/goals",
                json={"site_id": "nowhere.test", "goal_type": "event", "event_name": "E"},
            ).status_code
            == 404
        )
        refused = first.post("/api/v1/sites", json={"domain": "late.test"})
        assert (refused.status_code, refused.json()) == (429, {"error": LEGACY_HOURLY})
        assert error_of(second.get("/api/v1/sites/teams")) == LEGACY_HOURLY
        assert sam.get("/api/v1/sites").status_code == 200
    # Team-scoped keys keep the team's own bucket and limit.
    with sandbox.client() as team_key:
        assert team_key.get("/api/v1/sites").status_code == 200


def test_legacy_key_on_a_resolved_site_counts_against_the_sites_team(
    sandbox: SandboxProcess,
) -> None:
    sandbox.configure(legacy_hourly_limit=1, hour_seconds=1_000_000_000)
    team = sandbox.add_team(name="Small quota", hourly_limit=2)
    sandbox.add_site(domain="quota.test", team=team["id"])
    view = "6f1c2a4e-0000-4000-8000-000000000002"
    sandbox.add_site(domain=view, team=team["id"], consolidated=True)
    sandbox.add_key(key="quota-team-key", team=team["id"])
    sandbox.add_legacy_key("legacy-key", "pat")
    sandbox.add_membership(user="pat", team=team["id"], role="owner")
    goal = {"site_id": "quota.test", "goal_type": "event", "event_name": "E"}
    team_hourly = "Too many API requests. The limit is 2 per hour. Please contact us to request more capacity."
    user_hourly = "Too many API requests. The limit is 1 per hour. Please contact us to request more capacity."
    with sandbox.client("legacy-key") as legacy, sandbox.client("quota-team-key") as team_key:
        assert legacy.get("/api/v1/sites").status_code == 200  # the user's bucket: now full
        assert error_of(legacy.get("/api/v1/sites")) == user_hourly
        # A consolidated view is not a regular site: still the user's bucket.
        assert error_of(legacy.get(f"/api/v1/sites/{view}")) == user_hourly
        assert legacy.put("/api/v1/sites/goals", json=goal).status_code == 200
        assert team_key.get("/api/v1/sites").status_code == 200
        refused = legacy.put("/api/v1/sites/goals", json=goal)
        assert (refused.status_code, refused.json()) == (429, {"error": team_hourly})
        assert error_of(team_key.get("/api/v1/sites")) == team_hourly
