"""Plans over HTTP: POST /plans makes a plan from a desired state (JSON or TOML body) without an
API call, POST /plans/apply applies it as one batch; a second apply makes no job, a plan that
deletes a site needs allow_destroy=true, a stale plan is 409, and an edited one 422."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from provision.http.app import create_app
from testkit.databases import migrated_engine
from testkit.inventory import record_site
from testkit.service_api import AUTH, TOKEN
from worker.jobs.store import JobStore

DESIRED: dict[str, Any] = {
    "set": "agency",
    "defaults": {"goals": [{"event": "Signup"}]},
    "sites": [{"domain": "a.example.com"}, {"domain": "new.example.com"}],
}


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'web.db'}"))
    record_site(store, "a.example.com", goals={"Signup": 11}, managed_set="agency")
    record_site(store, "gone.example.com", managed_set="agency")
    return store


@pytest.fixture
def client(store: JobStore) -> TestClient:
    return TestClient(create_app(store, token=SecretStr(TOKEN)))


def test_a_plan_is_made_from_json_or_toml_and_applied_once(
    client: TestClient, store: JobStore
) -> None:
    made = client.post("/plans", json=DESIRED, headers=AUTH)
    assert made.status_code == 200, made.text
    plan = made.json()
    assert plan["summary"] == "Plan: 1 site, 1 goal to add; 1 site to destroy."
    assert plan["cost"]["calls"] == 3
    toml = 'set = "agency"\n[defaults]\ngoals = [{ event = "Signup" }]\n' + "".join(
        f'[[sites]]\ndomain = "{s["domain"]}"\n' for s in DESIRED["sites"]
    )
    same = client.post("/plans", content=toml, headers={**AUTH, "Content-Type": "application/toml"})
    assert same.json()["identity"] == plan["identity"]

    refused = client.post("/plans/apply", json=plan, headers=AUTH)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "destroy_not_allowed"
    applied = client.post("/plans/apply?allow_destroy=true", json=plan, headers=AUTH)
    assert applied.status_code == 202, applied.text
    body = applied.json()
    assert (body["created"], body["duplicate"], body["pending"]) == (2, 0, [])
    assert applied.headers["Location"] == f"/batches/{plan['batch']}"
    batch = client.get(applied.headers["Location"], headers=AUTH).json()
    assert batch["name"] == "set agency"
    again = client.post("/plans/apply?allow_destroy=true", json=plan, headers=AUTH).json()
    assert (again["created"], again["duplicate"]) == (0, 2)


def test_bad_plans_stale_plans_and_other_accounts_are_refused(
    client: TestClient, store: JobStore
) -> None:
    bad = client.post("/plans", json={"set": "x y", "sites": [{"domain": "?"}]}, headers=AUTH)
    assert bad.status_code == 422
    assert "set: required" in bad.json()["error"]["message"]
    assert "sites[0]: domain:" in bad.json()["error"]["message"]
    plan = client.post("/plans", json=DESIRED, headers=AUTH).json()
    edited = {**plan, "account": "nobody"}
    assert client.post("/plans/apply", json=edited, headers=AUTH).json()["error"]["code"] == (
        "invalid_plan"
    )
    assert client.post("/plans/apply", json=[1], headers=AUTH).status_code == 422
    record_site(store, "new.example.com")  # the inventory moved on
    stale = client.post("/plans/apply?allow_destroy=true", json=plan, headers=AUTH)
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_plan"
    assert "plan again" in stale.json()["error"]["message"]


def test_a_plan_is_kept_when_made_and_shown_on_the_dashboard_with_its_progress_once_applied(
    client: TestClient,
) -> None:
    made = client.post("/plans", json=DESIRED, headers=AUTH)
    plan = made.json()
    assert made.headers["Location"] == f"/plans/{plan['batch']}"
    planned = client.get(f"/plans/{plan['batch']}", headers=AUTH).json()
    assert (planned["status"], planned["applied_at"]) == ("planned", None)
    assert (planned["set"], planned["calls"], planned["summary"]) == ("agency", 3, plan["summary"])
    assert planned["changes"] == plan["changes"]
    assert planned["cost"]["calls"] == 3
    assert planned["cost"]["line"].startswith("Cost: 3 calls")
    assert client.get("/plans/nope", headers=AUTH).status_code == 404
    client.post("/plans/apply?allow_destroy=true", json=plan, headers=AUTH)
    kept = client.get(f"/plans/{plan['batch']}", headers=AUTH).json()
    assert kept["status"] == "applied"
    assert kept["applied_at"] is not None
    assert (kept["set"], kept["calls"], kept["summary"]) == ("agency", 3, plan["summary"])
    assert [c["action"] for c in kept["changes"]] == [c["action"] for c in plan["changes"]]
    # Made again once applied: still the applied plan.
    client.post("/plans", json=DESIRED, headers=AUTH)
    assert client.get(f"/plans/{plan['batch']}", headers=AUTH).json()["status"] == "applied"
    signed = client.post(
        "/ui/login",
        data={"token": TOKEN, "next": "/ui"},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert signed.status_code == 303
    page = client.get("/ui/plans")
    assert page.status_code == 200
    assert f'data-plan="{plan["batch"]}"' in page.text
    assert "0/2 done" in page.text
    one = client.get(f"/ui/plans/{plan['batch']}")
    assert one.status_code == 200
    assert "Plan of set agency" in one.text
    assert 'data-action="destroy"' in one.text
    assert "gone.example.com" in one.text
    assert client.get("/ui/plans/nope").status_code == 404


def test_a_plan_not_applied_yet_shows_its_tracker_change_on_the_dashboard(
    client: TestClient,
) -> None:
    desired = {
        "set": "agency",
        "sites": [
            {
                "domain": "a.example.com",
                "goals": [{"event": "Signup"}],
                "tracker_script_configuration": {"outbound_links": True},
            },
            {"domain": "gone.example.com"},
        ],
    }
    plan = client.post("/plans", json=desired, headers=AUTH).json()
    assert plan["summary"] == "Plan: 1 tracker configuration to change."
    assert plan["cost"]["calls"] == 1
    client.post(
        "/ui/login",
        data={"token": TOKEN, "next": "/ui"},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    page = client.get(f"/ui/plans/{plan['batch']}")
    assert page.status_code == 200
    assert "not applied yet" in page.text
    assert 'data-action="change"' in page.text
    assert "<code>~</code>" in page.text
    assert "outbound_links = true" in page.text
    # Listed with the plans applied, as not applied yet.
    listed = client.get("/ui/plans").text
    row = listed[listed.index(f'data-plan="{plan["batch"]}"') :].split("</tr>")[0]
    assert "not applied yet" in row
    assert "1 tracker configuration to change" in row
