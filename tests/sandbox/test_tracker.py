"""The tracker script configuration as job work, against the sandbox over HTTP: tracker.set
changes the site's settings in Plausible with the one call calls_needed counts, merged into what
the site had; site.provision creates a site with them (no extra call) or, when the site was
there already, sets them with one more; the inventory records what Plausible answered; and a
tracker.set on a site Plausible does not have fails as not found."""

from __future__ import annotations

from typing import Any

from producers.events import parse_event
from testkit.pipelines import api_requests
from testkit.sandbox_process import SandboxProcess
from worker.jobs.specs import JobRequest, Progress, calls_needed
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.service import Pipeline

DOMAIN = "shop.example.com"
TRACKER = "tracker_script_configuration"


def run(pipeline: Pipeline, store: JobStore, event: dict[str, Any]) -> JobRequest:
    parsed = parse_event(event)
    job = store.enqueue(parsed.request, key=parsed.key).job
    assert pipeline.run(job.id) is JobStatus.succeeded
    return parsed.request


def tracker_of(sandbox: SandboxProcess, domain: str) -> dict[str, Any]:
    site = next(s for s in sandbox.state()["sites"] if s["domain"] == domain)
    config: dict[str, Any] = site[TRACKER]
    return config


def test_tracker_set_changes_the_sites_configuration_in_plausible(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    before = api_requests(sandbox)
    created = run(pipeline, store, {"domain": DOMAIN, TRACKER: {"hash_based_routing": True}})
    # Sent with the create: the one call of a bare site.
    assert api_requests(sandbox) - before == calls_needed(created, Progress()) == 1
    assert tracker_of(sandbox, DOMAIN)["hash_based_routing"] is True
    script_id = tracker_of(sandbox, DOMAIN)["id"]

    before = api_requests(sandbox)
    event = {
        "type": "tracker.set",
        "domain": DOMAIN,
        TRACKER: {"installation_type": "manual", "tagged_events": True},
    }
    changed = run(pipeline, store, event)
    assert api_requests(sandbox) - before == calls_needed(changed, Progress()) == 1
    live = tracker_of(sandbox, DOMAIN)
    # Merged into what the site had; the script keeps its id.
    assert (live["installation_type"], live["tagged_events"], live["hash_based_routing"]) == (
        "manual",
        True,
        True,
    )
    assert live["id"] == script_id
    [view] = store.site(DOMAIN)
    assert view.site.tracker == {k: v for k, v in live.items() if k != "id"}

    # The same settings again (another job): one call, nothing changes.
    before = api_requests(sandbox)
    run(pipeline, store, {**event, "id": "again"})
    assert api_requests(sandbox) - before == 1
    assert tracker_of(sandbox, DOMAIN) == live


def test_a_site_already_there_gets_its_settings_with_one_more_call(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    sandbox.add_site(domain=DOMAIN, team=sandbox.state()["teams"][0]["id"])
    before = api_requests(sandbox)
    run(pipeline, store, {"domain": DOMAIN, TRACKER: {"pageview_props": True}})
    # The create finds the domain taken, the GET adopts it, the PUT sets the settings.
    assert api_requests(sandbox) - before == 3
    assert tracker_of(sandbox, DOMAIN)["pageview_props"] is True
    [view] = store.site(DOMAIN)
    assert view.site.tracker is not None
    assert view.site.tracker["pageview_props"] is True


def test_tracker_set_on_a_site_plausible_lacks_fails_as_not_found(
    store: JobStore, pipeline: Pipeline
) -> None:
    request = parse_event(
        {"type": "tracker.set", "domain": "nowhere.example.com", TRACKER: {"outbound_links": True}}
    ).request
    job = store.enqueue(request).job
    assert pipeline.run(job.id) is JobStatus.failed
    failed = store.get(job.id)
    assert failed is not None
    assert failed.error_code == "site_not_found"
    assert store.site("nowhere.example.com") == []
