"""A plan's refresh from the Python API and over HTTP, against the sandbox: the plan's sites are
read live through the quota (3 calls a site, all counted), the drift is reported (a goal deleted
and a tracker setting changed behind the provisioner's back) and planned back, and the plan is
kept, readable as "planned" before it is applied. Without the settings to read Plausible, a
refresh is refused."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from producers.api import Provisioner
from producers.events import parse_event
from producers.plans.refresh import LiveReader
from provision.http.app import create_app
from provision.tokens import LEGACY, Principal, Tokens, token_hash
from testkit.pipelines import UNLIMITED, api_requests
from testkit.sandbox_process import SandboxProcess
from testkit.service_api import AUTH, TOKEN
from worker.errors import ConfigurationError
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.service import Pipeline
from worker.settings import Settings

SHOP, BLOG = "shop.example.com", "blog.example.com"
TRACKER = "tracker_script_configuration"
DESIRED: dict[str, Any] = {
    "set": "agency",
    "defaults": {
        "goals": [{"event": "Signup"}, {"page": "/pricing"}],
        TRACKER: {"tagged_events": True},
    },
    "sites": [{"domain": SHOP}, {"domain": BLOG}],
}


@pytest.fixture
def refresher(sandbox: SandboxProcess, store: JobStore) -> LiveReader:
    settings = Settings(
        plausible_api_key=SecretStr("test-key"),
        plausible_base_url=sandbox.base_url,
        **UNLIMITED,  # type: ignore[arg-type]
    )
    return LiveReader(settings, store)


@pytest.fixture
def drifted(sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline) -> None:
    """Both sites made as the file says; then, behind the provisioner's back, shop's /pricing
    goal deleted and its tagged_events turned off."""
    for domain in (SHOP, BLOG):
        event = {
            "domain": domain,
            "goals": [
                {"goal_type": "event", "event_name": "Signup"},
                {"goal_type": "page", "page_path": "/pricing"},
            ],
            TRACKER: {"tagged_events": True},
        }
        job = store.enqueue(parse_event(event).request).job
        assert pipeline.run(job.id) is JobStatus.succeeded
    [gone] = [g for g in sandbox.state()["goals"] if g["domain"] == SHOP and g["page_path"]]
    with sandbox.client() as http:
        http.delete(
            f"/api/v1/sites/goals/{gone['id']}", params={"site_id": SHOP}
        ).raise_for_status()
        http.put(
            f"/api/v1/sites/{SHOP}", json={TRACKER: {"tagged_events": False}}
        ).raise_for_status()


def check_refreshed(plan: dict[str, Any]) -> None:
    assert plan["cost"]["refreshed"] == 6  # the site, its goals, its guests: 3 calls a site
    assert plan["cost"]["drift"] == [
        f"goal {SHOP} page:/pricing: in the inventory, gone from Plausible",
        f"site {SHOP}: tracker tagged_events true recorded, false live",
    ]
    assert [(c["action"], c["kind"], c["domain"], c["name"]) for c in plan["changes"]] == [
        ("change", "tracker configuration", SHOP, "tagged_events false -> true"),
        ("create", "goal", SHOP, "page:/pricing"),
    ]
    assert plan["cost"]["calls"] == 2


def test_a_refresh_from_python_reads_the_sites_live_and_the_plan_is_kept(
    sandbox: SandboxProcess, store: JobStore, refresher: LiveReader, drifted: None
) -> None:
    provisioner = Provisioner(store, accounts=["default"], refresher=refresher)
    quiet = provisioner.plan(DESIRED)
    assert quiet["summary"].startswith("No changes.")  # the inventory alone cannot know
    before = api_requests(sandbox)
    plan = provisioner.plan(DESIRED, refresh=True)
    assert api_requests(sandbox) - before == 6
    check_refreshed(plan)
    kept = provisioner.get_plan(plan["batch"])
    assert kept is not None
    assert (kept["status"], kept["calls"], kept["cost"]["refreshed"]) == ("planned", 2, 6)
    assert kept["changes"] == plan["changes"]
    assert kept["applied_at"] is None
    assert provisioner.apply_plan(plan)["created"] == 2
    applied = provisioner.get_plan(plan["batch"])
    assert applied is not None
    assert applied["status"] == "applied"
    with pytest.raises(ConfigurationError, match="refresh needs the provisioner's settings"):
        Provisioner(store).plan(DESIRED, refresh=True)


def test_a_refresh_over_http_reads_the_sites_live_and_the_plan_is_kept(
    sandbox: SandboxProcess, store: JobStore, refresher: LiveReader, drifted: None
) -> None:
    reader = "reader-token"
    tokens = Tokens(
        {
            token_hash(TOKEN): LEGACY,
            token_hash(reader): Principal("reader", frozenset({"jobs:read"}), None),
        }
    )
    app = create_app(store, token=SecretStr(""), tokens=tokens, refresher=refresher)
    client = TestClient(app)
    # A refresh spends the quota: a reader may plan, not refresh.
    as_reader = {"Authorization": f"Bearer {reader}"}
    assert client.post("/plans", json=DESIRED, headers=as_reader).status_code == 200
    denied = client.post("/plans?refresh=true", json=DESIRED, headers=as_reader)
    assert denied.status_code == 403
    before = api_requests(sandbox)
    made = client.post("/plans?refresh=true", json=DESIRED, headers=AUTH)
    assert made.status_code == 200, made.text
    assert api_requests(sandbox) - before == 6
    plan = made.json()
    check_refreshed(plan)
    assert made.headers["Location"] == f"/plans/{plan['batch']}"
    kept = client.get(made.headers["Location"], headers=AUTH).json()
    assert (kept["status"], kept["cost"]["drift"]) == ("planned", plan["cost"]["drift"])
    without = TestClient(create_app(store, token=SecretStr(TOKEN)))
    refused = without.post("/plans?refresh=true", json=DESIRED, headers=AUTH)
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "refresh_unavailable"
