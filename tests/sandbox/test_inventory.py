"""The inventory against the sandbox over HTTP, on SQLite and PostgreSQL: what the pipeline's
checkpoints record of what they made (sites created or adopted, goals, shared links), what
deletes remove, and that migration 0006's rebuild from the jobs' history finds the same."""

from __future__ import annotations

from testkit.inventory import inventory, rebuild_inventory
from testkit.pipelines import EVENT, PAGE, client_of, make_due, provision
from testkit.sandbox_process import SandboxProcess
from worker.jobs.specs import GoalSpec, JobRequest
from worker.jobs.states import JobStatus, Operation
from worker.jobs.store import JobStore
from worker.service import Pipeline


def run(pipeline: Pipeline, store: JobStore, request: JobRequest) -> str:
    job = store.enqueue(request).job
    assert pipeline.run(job.id) is JobStatus.succeeded
    return job.id


def test_a_provisioned_site_its_goals_and_links_are_in_the_inventory(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    job_id = run(pipeline, store, provision("https://www.Shop.example.com/"))
    state = sandbox.state()
    [view] = store.site("shop.example.com")
    assert (view.site.domain, view.site.timezone, view.site.origin, view.site.job_id) == (
        "shop.example.com",
        "Europe/Berlin",
        "created",
        job_id,
    )
    made = {g["id"]: g for g in state["goals"]}
    assert {(g.natural_key, g.goal_id) for g in view.goals} == {
        ("event:Signup", next(i for i, g in made.items() if g.get("event_name") == "Signup")),
        ("page:/pricing/*", next(i for i, g in made.items() if g.get("page_path"))),
    }
    [link] = view.links
    assert link.name == "WordPress"
    assert link.url.startswith(f"{sandbox.base_url}/share/shop.example.com?auth=")
    assert store.sites() == [view.site]
    assert store.sites(["another-account"]) == []


def test_adopted_and_existing_sites_say_where_they_came_from(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    client_of(pipeline).create_site("old.example.com")  # in the account before us
    run(pipeline, store, provision("old.example.com"))
    sandbox.configure(drop_rate=1.0)  # our create goes through; its answer is lost
    lost = store.enqueue(provision("lost.example.com")).job
    assert pipeline.run(lost.id) is JobStatus.waiting
    assert store.site("lost.example.com") == []  # nothing known yet: nothing recorded
    sandbox.configure(drop_rate=0)
    make_due(store, lost.id)
    assert pipeline.run(lost.id) is JobStatus.succeeded
    origins = {s.domain: s.origin for s in store.sites()}
    assert origins == {"old.example.com": "existed", "lost.example.com": "adopted"}


def test_a_later_job_adds_goals_to_a_recorded_site_and_keeps_its_origin(
    store: JobStore, pipeline: Pipeline
) -> None:
    first = run(pipeline, store, provision("shop.example.com"))
    extra = GoalSpec(goal_type="event", event_name="Purchase", display_name="Purchases")
    request = JobRequest(
        operation=Operation.provision_site,
        domain="shop.example.com",
        goals=(EVENT, extra),
    )
    run(pipeline, store, request)  # the site is taken, by a site of ours: adopted
    [view] = store.site("shop.example.com")
    assert (view.site.origin, view.site.job_id) == ("created", first)
    keys = {g.natural_key: g.display_name for g in view.goals}
    assert keys == {
        "event:Signup": "Signup",
        "page:/pricing/*": "Visit /pricing/*",
        "event:Purchase": "Purchases",
    }


def test_deletes_remove_what_they_deleted(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    run(pipeline, store, provision("shop.example.com"))
    run(pipeline, store, provision("blog.example.com"))
    by_key = JobRequest(operation=Operation.delete_goal, domain="shop.example.com", goal=EVENT)
    run(pipeline, store, by_key)  # the goal's id comes from the inventory
    [shop] = store.site("shop.example.com")
    assert [g.natural_key for g in shop.goals] == ["page:/pricing/*"]
    assert {g.get("page_path") for g in sandbox.state()["goals"]} >= {"/pricing/*"}
    run(pipeline, store, JobRequest(operation=Operation.delete_site, domain="shop.example.com"))
    assert store.site("shop.example.com") == []
    assert [s.domain for s in store.sites()] == ["blog.example.com"]
    rows = inventory(store.engine)
    assert {row[1] for table in rows.values() for row in table} == {"blog.example.com"}


def test_the_rebuild_from_history_equals_what_the_jobs_recorded(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    """Migration 0006 builds the inventory from the jobs' checkpoints: on the same history it
    finds exactly what the pipeline recorded as it went."""
    client_of(pipeline).create_site("old.example.com")
    run(pipeline, store, provision("old.example.com"))
    run(pipeline, store, provision("shop.example.com"))
    run(pipeline, store, provision("blog.example.com"))
    run(
        pipeline,
        store,
        JobRequest(operation=Operation.delete_goal, domain="shop.example.com", goal=PAGE),
    )
    run(pipeline, store, JobRequest(operation=Operation.delete_site, domain="blog.example.com"))
    recorded = inventory(store.engine)
    assert {row[1] for row in recorded["sites"]} == {"old.example.com", "shop.example.com"}
    with store.engine.begin() as connection:
        rebuild_inventory(connection)
    assert inventory(store.engine) == recorded
