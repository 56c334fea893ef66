"""Custom properties and guests against the sandbox over HTTP: a site.provision event allows its
custom properties and invites its guests (one call each, as counted), the inventory records them
with the role Plausible holds, and custom_prop.delete and guest.delete remove them there and in
the inventory; the events that ask for them are checked at the edge."""

from __future__ import annotations

from typing import Any

import pytest

from producers.events import parse_event
from testkit.pipelines import api_requests, client_of
from testkit.sandbox_process import SandboxProcess
from worker.errors import InvalidRequestError
from worker.jobs.specs import JobRequest, Progress, calls_needed
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.jobs.view import site_view
from worker.service import Pipeline


def run(pipeline: Pipeline, store: JobStore, event: dict[str, Any]) -> JobRequest:
    request = parse_event(event).request
    job = store.enqueue(request).job
    assert pipeline.run(job.id) is JobStatus.succeeded
    return request


def site_of(sandbox: SandboxProcess, domain: str) -> dict[str, Any]:
    return next(s for s in sandbox.state()["sites"] if s["domain"] == domain)


def test_props_and_guests_are_ensured_recorded_and_deleted(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    event = {
        "domain": "shop.example.com",
        "custom_props": ["plan", " author ", "plan"],
        "guests": [
            {"email": "owner@shop.example.com", "role": "viewer"},
            {"email": "dev@shop.example.com", "role": "editor"},
        ],
    }
    before = api_requests(sandbox)
    request = run(pipeline, store, event)
    assert request.custom_props == ("plan", "author")
    # The site, two properties, two guests: what calls_needed counted.
    assert api_requests(sandbox) - before == calls_needed(request, Progress()) == 5
    site = site_of(sandbox, "shop.example.com")
    assert sorted(site["custom_properties"]) == ["author", "plan"]
    assert {(g["email"], g["role"]) for g in site["guests"]} == {
        ("owner@shop.example.com", "viewer"),
        ("dev@shop.example.com", "editor"),
    }
    [view] = store.site("shop.example.com")
    assert [p.name for p in view.props] == ["author", "plan"]
    assert [(g.email, g.role) for g in view.guests] == [
        ("dev@shop.example.com", "editor"),
        ("owner@shop.example.com", "viewer"),
    ]
    # As provision sites --json, GET /sites and the Python API show it.
    shown = site_view(view)
    assert shown.custom_props == ["author", "plan"]
    assert [(g.email, g.role) for g in shown.guests] == [
        ("dev@shop.example.com", "editor"),
        ("owner@shop.example.com", "viewer"),
    ]
    # An existing guest keeps its role: the inventory records the role Plausible holds.
    again = {
        "domain": "shop.example.com",
        "guests": [{"email": "dev@shop.example.com", "role": "viewer"}],
    }
    run(pipeline, store, again)
    [view] = store.site("shop.example.com")
    assert ("dev@shop.example.com", "editor") in [(g.email, g.role) for g in view.guests]

    run(
        pipeline,
        store,
        {"type": "custom_prop.delete", "domain": "shop.example.com", "property": "plan"},
    )
    run(
        pipeline,
        store,
        {"type": "guest.delete", "domain": "shop.example.com", "email": "dev@shop.example.com"},
    )
    site = site_of(sandbox, "shop.example.com")
    assert site["custom_properties"] == ["author"]
    assert [g["email"] for g in site["guests"]] == ["owner@shop.example.com"]
    [view] = store.site("shop.example.com")
    assert [p.name for p in view.props] == ["author"]
    assert [g.email for g in view.guests] == ["owner@shop.example.com"]
    # Deleting what is not there is done too (Plausible answers so).
    run(pipeline, store, {"type": "guest.delete", "domain": "shop.example.com", "email": "x@y.z"})
    run(pipeline, store, {"type": "site.delete", "domain": "shop.example.com"})
    assert store.site("shop.example.com") == []


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"custom_props": "plan"}, "custom_props"),
        ({"custom_props": ["ok", ""]}, "custom_props[1]"),
        ({"custom_props": ["x" * 301]}, "custom_props[0]"),
        ({"guests": [{"email": "a@b.c", "role": "owner"}]}, "guests[0].role"),
        ({"guests": [{"email": "not an email", "role": "viewer"}]}, "guests[0].email"),
        (
            {
                "guests": [
                    {"email": "a@b.c", "role": "viewer"},
                    {"email": "a@b.c", "role": "editor"},
                ]
            },
            "guests[1]",
        ),
        ({"type": "custom_prop.delete"}, "property"),
        ({"type": "guest.delete", "email": ""}, "email"),
    ],
)
def test_bad_props_and_guests_are_refused_naming_the_field(
    event: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_event({"domain": "shop.example.com", **event})
    assert caught.value.field == field


def test_refresh_reads_each_site_through_the_quota_and_reports_drift(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    from producers.plans import saved as plans
    from producers.plans.refresh import refresh
    from worker.retrying import RetryPolicy

    event = {
        "domain": "shop.example.com",
        "goals": [{"goal_type": "event", "event_name": "Signup"}],
        "custom_props": ["plan", "author"],
        "guests": [
            {"email": "a@shop.example.com", "role": "viewer"},
            {"email": "b@shop.example.com", "role": "viewer"},
        ],
    }
    run(pipeline, store, event)
    client = client_of(pipeline)
    client.delete_custom_prop("shop.example.com", "author")
    client.delete_guest("shop.example.com", "a@shop.example.com")
    client.delete_guest("shop.example.com", "b@shop.example.com")
    client.ensure_guest("shop.example.com", "b@shop.example.com", "editor")
    client.ensure_goal("shop.example.com", goal_type="event", event_name="Handmade")
    views = list(plans.inventory(store, "default"))
    before = api_requests(sandbox)
    found = refresh(
        views,
        ["shop.example.com", "unknown.example.com"],
        client=client,
        account=pipeline.accounts.get("default"),
        limiter=pipeline.limiter,
        policy=RetryPolicy(max_attempts=1),
    )
    assert found.calls == api_requests(sandbox) - before == 3
    assert found.drift == [
        "goal shop.example.com event:Handmade: live, not in the inventory (made elsewhere)",
        "custom property shop.example.com author: in the inventory, gone from Plausible",
        "guest shop.example.com a@shop.example.com: in the inventory, gone from Plausible",
        "guest shop.example.com b@shop.example.com: role viewer recorded, editor live",
    ]
    [view] = found.views
    assert [g.natural_key for g in view.goals] == ["event:Signup"]
    assert [p.name for p in view.props] == ["plan"]
    assert [(g.email, g.role) for g in view.guests] == [("b@shop.example.com", "editor")]
    # The inventory itself is not written by a refresh.
    [kept] = store.site("shop.example.com")
    assert len(kept.guests) == 2
