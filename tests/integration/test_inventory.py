"""Work apart from state with real workers: the inventory equals what Plausible holds after
workers are SIGKILLed mid-job, and the counts the database keeps equal a fresh count while two
workers run, an operator cancels and jobs fail and are retried."""

from __future__ import annotations

from typing import Any

from testkit.inventory import inventory, kept_counts, recounted
from testkit.waiting import wait_for
from testkit.workers import Stack, assert_all_succeeded, assert_provisioned_once
from worker.jobs.filters import JobFilter
from worker.jobs.states import JobStatus


def plausible(state: dict[str, Any]) -> dict[str, set[Any]]:
    """The sandbox's sites, goals (by id) and shared links (with their auth), as sets."""
    return {
        "sites": {site["domain"] for site in state["sites"]},
        "goals": {(g["domain"], g["id"]) for g in state["goals"]},
        "links": {
            (site["domain"], link["name"], link["auth"])
            for site in state["sites"]
            for link in site["shared_links"]
        },
    }


def test_after_workers_are_killed_mid_job_the_inventory_is_what_plausible_holds(
    stack: Stack,
) -> None:
    stack.sandbox.configure(latency_ms=150)
    worker = stack.start_worker(pool="prefork", concurrency=2)
    ids = stack.submit_sites(f"kill{n}.example.com" for n in range(12))
    for _ in range(2):  # twice while a job is between its goals
        wait_for(
            lambda: [
                j
                for j in stack.jobs(ids)
                if j.status == JobStatus.running and j.progress.site and len(j.progress.goals) < 2
            ],
            timeout=20,
            interval=0.02,
            describe=lambda: f"a job between its goals\n{stack.logs()}",
        )
        assert worker.kill_pool()
        wait_for(lambda: len(worker.pool_pids()) == 2, timeout=10, describe="new pool processes")
    jobs = stack.wait_done(ids, timeout=60)
    assert_all_succeeded(jobs)
    state = stack.sandbox.state()
    assert_provisioned_once(state, jobs)
    rows = inventory(stack.engine)
    ours = {
        "sites": {row[1] for row in rows["sites"]},
        "goals": {(row[1], row[3]) for row in rows["goals"]},
        "links": {(row[1], row[2], row[3].rpartition("auth=")[2]) for row in rows["links"]},
    }
    assert ours == plausible(state)
    assert kept_counts(stack.engine) == recounted(stack.engine)


def consistent_counts(stack: Stack) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """The kept counts and a fresh count, read in one snapshot while the workers write."""
    engine = stack.engine
    level = "REPEATABLE READ" if engine.dialect.name == "postgresql" else "SERIALIZABLE"
    with (
        engine.connect().execution_options(isolation_level=level) as connection,
        connection.begin(),
    ):
        return kept_counts(connection), recounted(connection)


def test_the_counts_stay_exact_under_two_workers_cancels_and_retries(stack: Stack) -> None:
    assert stack.sandbox.other_team_api_key is not None
    with stack.sandbox.client(stack.sandbox.other_team_api_key) as client:
        for n in range(6):  # another team's: these jobs fail domain_taken
            client.post(
                "/api/v1/sites", json={"domain": f"taken{n}.example.com"}
            ).raise_for_status()
    stack.sandbox.configure(latency_ms=40)
    stack.start_worker(concurrency=3)
    stack.start_worker(concurrency=3)
    taken = stack.submit_sites(f"taken{n}.example.com" for n in range(6))
    ids = stack.submit_sites(f"count{n}.example.com" for n in range(40))
    cancelled = [job_id for job_id in ids[-12:] if stack.store.cancel(job_id)]
    assert cancelled  # the workers cannot have started them all yet

    def compared_while_running() -> bool:
        kept, fresh = consistent_counts(stack)
        assert kept == fresh
        return all(j.status == JobStatus.failed for j in stack.jobs(taken))

    wait_for(compared_while_running, timeout=60, interval=0.05, describe="the taken ones to fail")
    retried = stack.store.retry_matching(JobFilter(error_code="domain_taken"))
    assert sorted(retried) == sorted(taken)
    stack.wait_done(ids + taken, timeout=90)
    assert kept_counts(stack.engine) == recounted(stack.engine)
    statuses = stack.status_counts(ids + taken)
    assert statuses["failed"] == len(taken)
    assert statuses["cancelled"] == len(cancelled)
