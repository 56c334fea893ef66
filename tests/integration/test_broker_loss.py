"""The broker loses every message (FLUSHDB on its Redis db) and every job still completes.

The broker only carries job ids; the status table knows which jobs are queued and when their
message was published. The sweeper publishes again any dispatched job whose message went out
more than PROVISIONER_REDISPATCH_AFTER_SECONDS (3 s here) ago without the job starting. The
quota's counts live in the status table too, so the flush cannot reset them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import redis

from testkit.services import REDIS_URL
from testkit.waiting import wait_for
from testkit.workers import Stack, assert_all_succeeded, assert_provisioned_once
from worker.app import QUEUE
from worker.jobs.states import JobStatus


def queued_messages() -> int:
    """The queue's messages, over every priority's list (``worker.app.PRIORITIES``)."""
    with contextlib.closing(redis.Redis.from_url(REDIS_URL)) as client:
        return sum(int(client.llen(key)) for key in client.keys(f"{QUEUE}*"))


def test_jobs_survive_a_flushed_broker(stack: Stack, flush_broker: Callable[[], int]) -> None:
    stack.sandbox.configure(latency_ms=100)
    # 1. Messages published (by a scheduler) while no worker runs, then lost before any worker
    # sees them.
    early = stack.submit_sites(f"early{n}.example.com" for n in range(8))
    assert sorted(stack.schedule()) == sorted(early)
    assert queued_messages() == len(early)
    flush_broker()
    assert queued_messages() == 0

    worker = stack.start_worker(concurrency=2)
    # 2. Messages lost while a worker is busy: some jobs done, some running, some still queued.
    late = stack.submit_sites(f"late{n}.example.com" for n in range(16))
    wait_for(
        lambda: stack.status_counts(late)[JobStatus.succeeded] >= 2,
        timeout=30,
        describe=lambda: (
            f"the first late jobs to finish; {stack.status_counts(late)}\n{stack.logs()}"
        ),
    )
    assert stack.status_counts(late)[JobStatus.queued] > 0, "test too slow to lose queued jobs"
    flush_broker()

    jobs = stack.wait_done(early + late, timeout=60)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)
    # The early jobs ran only because the sweeper published them again.
    assert all(job.dispatch_count >= 2 for job in jobs if job.id in early)
    assert worker.alive()
