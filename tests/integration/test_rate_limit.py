"""A small burst limit: jobs get 429s, are parked in the status table (waiting, with
``next_attempt_at`` at the window's reset) rather than sleeping in a worker slot, and all
complete once the windows reopen. Waiting for quota does not count as an attempt, and the shared
quota gate keeps the other workers from calling while the window is shut."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import (
    Stack,
    assert_all_succeeded,
    assert_provisioned_once,
    wait_for,
)
from worker.models import JobStatus

CONCURRENCY = 2


def test_rate_limited_jobs_are_parked_and_complete_later(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    stack.sandbox.configure(burst_limit=10, burst_seconds=1)
    stack.start_worker(concurrency=CONCURRENCY)
    ids = stack.submit_sites(f"limited{n}.example.com" for n in range(12))  # 48 requests

    parked: dict[str, Any] = {}  # job id -> (error_code, next_attempt_at) seen while waiting
    most_waiting = 0

    def all_done() -> bool:
        nonlocal most_waiting
        jobs = stack.jobs(ids)
        waiting = [j for j in jobs if j.status == JobStatus.waiting]
        most_waiting = max(most_waiting, len(waiting))
        parked.update({j.id: (j.error_code, j.next_attempt_at) for j in waiting})
        return all(j.status.done for j in jobs)

    wait_for(
        all_done,
        timeout=60,
        interval=0.05,
        describe=lambda: f"all jobs to finish; {stack.status_counts(ids)}\n{stack.logs()}",
    )
    jobs = stack.jobs(ids)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)

    assert stack.sandbox.state()["counters"]["rate_limited"] > 0
    assert parked, "no job was ever seen parked"
    # A 429 parks its job (rate_limited) and shuts the quota gate, which parks the others before
    # they spend quota on requests Plausible would refuse (quota_closed).
    codes = {code for code, _ in parked.values()}
    assert "rate_limited" in codes
    assert codes <= {"rate_limited", "quota_closed"}
    assert all(when is not None for _, when in parked.values())
    # More jobs parked at once than the worker has slots: waiting holds no worker process.
    assert most_waiting > CONCURRENCY, most_waiting
    # Waiting for quota is refunded: only rate limits happened, so each job took one attempt.
    assert [j.attempts for j in jobs] == [1] * len(jobs)
