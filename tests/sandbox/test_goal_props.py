"""A goal's custom properties in a desired state, against the sandbox: a plan whose goal's
custom properties changed deletes it and makes it again, spending the calls its cost counts;
Plausible then holds the goal with the new properties and the inventory records them, so the
same file plans nothing; a refresh reports properties changed behind the provisioner's back
and plans them back; the inventory's views show each goal's properties."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from producers.api import Provisioner
from producers.plans.refresh import LiveReader
from testkit.pipelines import UNLIMITED, api_requests, client_of
from testkit.sandbox_process import SandboxProcess
from worker.jobs.filters import JobFilter
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.jobs.view import site_view
from worker.service import Pipeline
from worker.settings import Settings

SHOP = "shop.example.com"
FREE, PRO, TEAM = {"plan": "free"}, {"plan": "pro"}, {"plan": "team"}


def desired(props: dict[str, str]) -> dict[str, Any]:
    goals = [{"event": "Signup", "custom_props": props}, {"page": "/pricing"}]
    return {"set": "agency", "sites": [{"domain": SHOP, "goals": goals}]}


@pytest.fixture
def provisioner(sandbox: SandboxProcess, store: JobStore) -> Provisioner:
    settings = Settings(
        plausible_api_key=SecretStr("test-key"),
        plausible_base_url=sandbox.base_url,
        **UNLIMITED,  # type: ignore[arg-type]
    )
    return Provisioner(store, accounts=["default"], refresher=LiveReader(settings, store))


def apply(provisioner: Provisioner, store: JobStore, pipeline: Pipeline, plan: Any) -> None:
    """Apply ``plan`` and run its jobs, the re-creations once their deletes are done."""
    while True:
        applied = provisioner.apply_plan(plan)
        for job in store.list_jobs(JobFilter(batch_id=applied["batch_id"]), limit=100):
            if not job.status.done:
                assert pipeline.run(job.id) is JobStatus.succeeded
        if not applied["pending"]:
            return


def signups(sandbox: SandboxProcess) -> list[tuple[int, dict[str, str]]]:
    return [
        (goal["id"], goal["custom_props"])
        for goal in sandbox.state()["goals"]
        if goal["domain"] == SHOP and goal["event_name"] == "Signup"
    ]


def recorded(store: JobStore) -> tuple[int, dict[str, str]]:
    [view] = store.site(SHOP)
    [goal] = [goal for goal in view.goals if goal.natural_key == "event:Signup"]
    return goal.goal_id, goal.custom_props


def test_an_apply_leaves_the_goal_with_the_new_custom_props(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline, provisioner: Provisioner
) -> None:
    apply(provisioner, store, pipeline, provisioner.plan(desired(FREE)))
    [(first, props)] = signups(sandbox)
    assert props == FREE
    assert recorded(store) == (first, FREE)

    plan = provisioner.plan(desired(PRO))
    assert [(c["action"], c["name"], c["detail"]) for c in plan["changes"]] == [
        ("replace", "event:Signup", 'custom props {"plan": "free"} -> {"plan": "pro"}')
    ]
    assert plan["summary"] == "Plan: 1 goal to replace."
    assert plan["cost"]["calls"] == 2  # the delete by id, then the find-or-create
    before = api_requests(sandbox)
    apply(provisioner, store, pipeline, plan)
    assert api_requests(sandbox) - before == plan["cost"]["calls"]
    [(again, props)] = signups(sandbox)
    assert (again != first, props) == (True, PRO)
    assert recorded(store) == (again, PRO)
    assert provisioner.plan(desired(PRO))["summary"].startswith("No changes.")

    # Behind the provisioner's back: the goal made again with other properties.
    client = client_of(pipeline)
    client.delete_goal(SHOP, again)
    client.ensure_goal(SHOP, goal_type="event", event_name="Signup", custom_props=TEAM)
    [(handmade, _)] = signups(sandbox)
    before = api_requests(sandbox)
    refreshed = provisioner.plan(desired(PRO), refresh=True)
    assert api_requests(sandbox) - before == refreshed["cost"]["refreshed"] == 3
    assert refreshed["cost"]["drift"] == [
        f"goal {SHOP} event:Signup: changed since recorded",
        f'goal {SHOP} event:Signup: custom props {{"plan": "pro"}} recorded, {{"plan": "team"}} '
        "live",
    ]
    assert [(c["action"], c["detail"]) for c in refreshed["changes"]] == [
        ("replace", 'custom props {"plan": "team"} -> {"plan": "pro"}')
    ]
    before = api_requests(sandbox)
    apply(provisioner, store, pipeline, refreshed)
    assert api_requests(sandbox) - before == refreshed["cost"]["calls"] == 2
    [(last, props)] = signups(sandbox)
    assert (last != handmade, props, recorded(store)) == (True, PRO, (last, PRO))
    # As GET /sites, provision sites --json and the Python API show the site.
    [view] = store.site(SHOP)
    shown = {goal.natural_key: goal.custom_props for goal in site_view(view).goals}
    assert shown == {"event:Signup": PRO, "page:/pricing": {}}
