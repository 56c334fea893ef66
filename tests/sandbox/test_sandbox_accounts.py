"""The sandbox over real HTTP, asserted against the Sites API reference: sites made in the UI,
consolidated views, memberships and roles, and creating sites with legacy keys (§3, §4, §7.3)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from testkit.api_texts import CONSOLIDATED, DOMAIN_TAKEN, INVALID_KEY, NO_SITES_API, SITE_NOT_FOUND
from testkit.sandbox_http import create, error_of
from testkit.sandbox_process import SandboxProcess


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


def test_admin_site_old_domain_resolves(sandbox: SandboxProcess, http: httpx.Client) -> None:
    sandbox.add_site(
        domain="renamed.test", team=default_team(sandbox), domain_changed_from="original.test"
    )
    assert http.get("/api/v1/sites/original.test").json()["domain"] == "renamed.test"
    # Another team may not take the old domain during the 72 hours.
    with sandbox.client("other-team-key") as other:
        assert create(other, "original.test").json() == {"error": DOMAIN_TAKEN}


def test_consolidated_view_is_400_on_every_site_route_before_key_checks(
    sandbox: SandboxProcess, http: httpx.Client
) -> None:
    view = "6f1c2a4e-0000-4000-8000-000000000001"
    sandbox.add_site(domain=view, team=default_team(sandbox), consolidated=True)
    create(http, "regular.test")
    expected = (400, {"error": CONSOLIDATED})
    assert outcomes(seed_operations(http, view)) == dict.fromkeys(
        ["shared_link", "goal", "delete_goal", "delete_site"], expected
    )
    for response in (
        http.get(f"/api/v1/sites/{view}"),
        http.put(f"/api/v1/sites/{view}", json={"domain": "new.test"}),
        http.get("/api/v1/sites/goals", params={"site_id": view}),
        http.put("/api/v1/sites/custom-props", json={"site_id": view, "property": "p"}),
        http.delete("/api/v1/sites/guests/a@b.test", params={"site_id": view}),
    ):
        assert (response.status_code, response.json()) == expected
    # 7a comes before the key's team is compared: another team's key gets the 400 too.
    with sandbox.client("other-team-key") as other:
        foreign = other.delete(f"/api/v1/sites/{view}")
    assert (foreign.status_code, foreign.json()) == expected
    assert [s["domain"] for s in http.get("/api/v1/sites").json()["sites"]] == ["regular.test"]
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
        assert (deleted.status_code, error_of(deleted)) == (404, SITE_NOT_FOUND)
        assert [s["domain"] for s in editor.get("/api/v1/sites").json()["sites"]] == ["hosted.test"]
    with sandbox.client("viewer-guest-key") as viewer:
        assert (
            viewer.get("/api/v1/sites/goals", params={"site_id": "hosted.test"}).status_code == 200
        )
        refused = viewer.put(
            "/api/v1/sites/goals",
            json={"site_id": "hosted.test", "goal_type": "event", "event_name": "E"},
        )
        assert (refused.status_code, error_of(refused)) == (404, SITE_NOT_FOUND)
        gone = viewer.delete(
            f"/api/v1/sites/goals/{goal.json()['id']}", params={"site_id": "hosted.test"}
        )
        assert (gone.status_code, error_of(gone)) == (404, SITE_NOT_FOUND)
    with sandbox.client("stranger-key") as stranger:
        # Not a member at all: 7g.
        assert outcomes(seed_operations(stranger, "hosted.test")) == dict.fromkeys(
            ["shared_link", "goal", "delete_goal", "delete_site"], (401, {"error": INVALID_KEY})
        )
        assert stranger.get("/api/v1/sites").json()["sites"] == []


def test_team_roles_below_owner_get_404_on_delete_and_viewers_on_writes(
    sandbox: SandboxProcess, http: httpx.Client
) -> None:
    create(http, "roles.test")
    goal_id = http.put(
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
        assert (response.status_code, error_of(response)) == (404, SITE_NOT_FOUND)
    for key in ("viewer-key", "billing-key"):
        with sandbox.client(key) as low:
            answers = outcomes(seed_operations(low, "roles.test"))
        assert answers == dict.fromkeys(answers, (404, {"error": SITE_NOT_FOUND}))
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


def test_team_scoped_keys_ignore_team_id(sandbox: SandboxProcess, http: httpx.Client) -> None:
    other = next(t for t in sandbox.state()["teams"] if t["name"] == "Other team")
    assert create(http, "own.test", team_id=other["id"]).status_code == 200
    assert sandbox.state()["sites"][0]["team"] == default_team(sandbox)
