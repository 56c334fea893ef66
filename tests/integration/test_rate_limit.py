"""The quota is spent to the last call and never overspent: real workers against the sandbox with
its burst limit, over several compressed windows. Jobs wait for room as rows (queued, no worker
slot held), and waiting for quota does not count as an attempt."""

from __future__ import annotations

from collections import Counter
from typing import Any

from testkit.waiting import wait_for
from testkit.workers import Stack, assert_all_succeeded, assert_provisioned_once
from worker.jobs.states import JobStatus

CONCURRENCY = 2
#: The quota on both sides: the sandbox's limits and the provisioner's settings.
QUOTA = {"burst_limit": 12, "burst_seconds": 2, "hourly_limit": 10_000_000}
GUARD = {"quota_guard_seconds": 0.2}


def calls_per_window(log: list[list[Any]], seconds: float) -> Counter[int]:
    return Counter(int(at // seconds) for at, status, _ in log if status != 429)


def test_jobs_wait_for_room_and_no_request_is_ever_refused(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    stack.sandbox.configure(**QUOTA)
    stack.start_worker(concurrency=CONCURRENCY, **QUOTA, **GUARD)
    ids = stack.submit_sites(f"limited{n}.example.com" for n in range(18))  # 72 calls: 6 windows

    most_waiting = 0

    def all_done() -> bool:
        nonlocal most_waiting
        jobs = stack.jobs(ids)
        most_waiting = max(most_waiting, sum(j.status == JobStatus.queued for j in jobs))
        return all(j.status.done for j in jobs)

    wait_for(
        all_done,
        timeout=90,
        interval=0.05,
        describe=lambda: f"all jobs to finish; {stack.status_counts(ids)}\n{stack.logs()}",
    )
    jobs = stack.jobs(ids)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)

    state = stack.sandbox.state()
    assert state["counters"]["rate_limited"] == 0
    log = stack.sandbox.admin.get("/_sandbox/requests").json()["requests"]
    per_window = calls_per_window(log, QUOTA["burst_seconds"])
    assert max(per_window.values()) <= QUOTA["burst_limit"]
    assert sum(per_window.values()) == 72  # 4 calls a site, not one more
    assert len(per_window) >= 6
    # More jobs waited at once than the worker has slots: waiting holds no worker process.
    assert most_waiting > CONCURRENCY, most_waiting
    # Waiting for quota is not an attempt: each job was claimed once.
    assert [j.attempts for j in jobs] == [1] * len(jobs)
