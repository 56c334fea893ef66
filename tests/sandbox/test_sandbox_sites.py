"""The sandbox over real HTTP, asserted against the Sites API reference: the site routes
(create, delete, get, update), the lists, what the framework answers before any route, and the
order of the auth plug's checks."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from testkit.api_texts import DOMAIN_TAKEN, INVALID_KEY, MISSING_SITE_ID
from testkit.sandbox_http import create, error_of
from testkit.sandbox_process import SandboxProcess

# -- create site -------------------------------------------------------------------------------


def test_create_site_returns_the_full_shape(http: httpx.Client) -> None:
    response = create(http, "https://www.Example.com/")
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
    sandbox: SandboxProcess, http: httpx.Client, payload: dict[str, Any], message: str
) -> None:
    response = http.post("/api/v1/sites", json=payload)
    assert (response.status_code, error_of(response)) == (400, message)
    assert sandbox.state()["sites"] == []


def test_create_site_twice_gives_the_taken_message_with_its_newline(http: httpx.Client) -> None:
    assert create(http, "example.com").status_code == 200
    again = create(http, "WWW.example.com")
    assert again.status_code == 400
    assert again.json() == {"error": DOMAIN_TAKEN}


def test_create_site_with_an_over_long_domain_is_a_500(http: httpx.Client) -> None:
    response = create(http, "a" * 252 + ".com")
    assert (response.status_code, response.json()) == (500, {"error": "internal server error"})


def test_create_site_accepts_form_and_multipart_bodies_with_brackets(
    sandbox: SandboxProcess, http: httpx.Client
) -> None:
    form = http.post(
        "/api/v1/sites",
        data={
            "domain": "form.test",
            "timezone": "Europe/Berlin",
            "tracker_script_configuration[outbound_links]": "true",
        },
    )
    assert form.status_code == 200
    assert form.json()["tracker_script_configuration"]["outbound_links"] is True
    multipart = http.post(
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


def test_query_params_count_and_body_beats_query(http: httpx.Client) -> None:
    response = http.post(
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
    sandbox: SandboxProcess, http: httpx.Client
) -> None:
    create(http, "gone.test")
    http.put(
        "/api/v1/sites/goals",
        json={"site_id": "gone.test", "goal_type": "event", "event_name": "A"},
    )
    response = http.delete("/api/v1/sites/gone.test")
    assert (response.status_code, response.json()) == (200, {"deleted": True})
    assert sandbox.state()["sites"] == []
    assert sandbox.state()["goals"] == []
    again = http.delete("/api/v1/sites/gone.test")
    assert (again.status_code, error_of(again)) == (404, "Site could not be found")


def test_delete_site_needs_the_owner_role(sandbox: SandboxProcess, http: httpx.Client) -> None:
    create(http, "kept.test")
    sandbox.add_key(key="admin-key", role="admin")
    with sandbox.client("admin-key") as client:
        response = client.delete("/api/v1/sites/kept.test")
    assert (response.status_code, error_of(response)) == (404, "Site could not be found")


def test_delete_site_by_old_domain_and_domain_with_slash(http: httpx.Client) -> None:
    create(http, "old.test")
    assert http.put("/api/v1/sites/old.test", json={"domain": "new.test"}).status_code == 200
    assert http.delete("/api/v1/sites/old.test").json() == {"deleted": True}
    create(http, "example.com/blog")
    assert http.delete("/api/v1/sites/example.com%2Fblog").json() == {"deleted": True}


# -- get / update site -------------------------------------------------------------------------


def test_update_site_changes_domain_and_keeps_old_one_usable(http: httpx.Client) -> None:
    create(http, "before.test")
    changed = http.put(
        "/api/v1/sites/before.test",
        json={"domain": "after.test", "tracker_script_configuration": {"installation_type": "npm"}},
    )
    assert changed.status_code == 200
    assert changed.json()["domain"] == "after.test"
    assert changed.json()["tracker_script_configuration"]["installation_type"] == "npm"
    assert http.get("/api/v1/sites/before.test").json()["domain"] == "after.test"
    same = http.put("/api/v1/sites/after.test", json={"domain": "after.test"})
    assert error_of(same) == "domain: New domain must be different than the current one"
    empty = http.put("/api/v1/sites/after.test", json={})
    assert (
        error_of(empty)
        == "Payload must contain at least one of the parameters 'domain', 'tracker_script_configuration'"
    )
    invalid = http.put("/api/v1/sites/after.test", json={"domain": 123})
    assert (invalid.status_code, error_of(invalid)) == (400, "domain: is invalid")


def test_failed_config_update_rolls_back_the_domain_change(http: httpx.Client) -> None:
    create(http, "stay.test")
    response = http.put(
        "/api/v1/sites/stay.test",
        json={"domain": "moved.test", "tracker_script_configuration": {"tagged_events": "nope"}},
    )
    assert (response.status_code, error_of(response)) == (
        400,
        "tracker_script_configuration.tagged_events: is invalid",
    )
    assert http.get("/api/v1/sites/stay.test").json()["domain"] == "stay.test"


def test_lists_are_newest_first_and_paginated(http: httpx.Client) -> None:
    for name in ("a.test", "b.test", "c.test"):
        create(http, name)
    first = http.get("/api/v1/sites", params={"limit": "2"}).json()
    assert [s["domain"] for s in first["sites"]] == ["c.test", "b.test"]
    assert first["meta"]["before"] is None
    assert first["meta"]["limit"] == 2
    second = http.get(
        "/api/v1/sites", params={"limit": "2", "after": first["meta"]["after"]}
    ).json()
    assert second["sites"] == [{"domain": "a.test", "timezone": "Etc/UTC"}]
    assert second["meta"]["after"] is None
    assert isinstance(second["meta"]["before"], str)
    assert http.get("/api/v1/sites", params={"limit": "500"}).json()["meta"]["limit"] == 100
    assert http.get("/api/v1/sites", params={"limit": "x"}).status_code == 500
    assert http.get("/api/v1/sites", params={"after": "%%%"}).json() == {
        "error": "internal server error"
    }


def test_teams_list_shows_the_key_team_and_stats_availability(http: httpx.Client) -> None:
    body = http.get("/api/v1/sites/teams").json()
    assert len(body["teams"]) == 1
    assert body["teams"][0]["api_available"] is True
    assert body["meta"] == {"after": None, "before": None, "limit": 100}


# -- framework errors and the auth plug --------------------------------------------------------


def test_framework_errors(http: httpx.Client) -> None:
    bad_json = http.post(
        "/api/v1/sites", content=b"{", headers={"content-type": "application/json"}
    )
    assert (bad_json.status_code, bad_json.json()) == (
        400,
        {"message": "Bad Request", "status": 400},
    )
    unknown = http.get("/api/v1/nothing")
    assert (unknown.status_code, unknown.json()) == (404, {"message": "Not Found", "status": 404})
    assert http.patch("/api/v1/sites/x.test").status_code == 404
    html = http.get("/api/v1/sites", headers={"accept": "text/html"})
    assert html.status_code == 406
    array = http.post("/api/v1/sites", json=["example.com"])
    assert error_of(array) == "domain: can't be blank"


def test_auth_pipeline_order(sandbox: SandboxProcess, http: httpx.Client) -> None:
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
    create(http, "mine.test")
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
