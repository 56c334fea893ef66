"""Workers SIGKILLed in the middle of jobs: every job still succeeds, nothing is created twice.

Each API call takes 150 ms in the sandbox, so a job (create site, two goals, one shared link)
runs for at least 600 ms and the kills land inside a step. The pool children are killed three
times, each while some job is at a different step, then the whole worker is killed and started
again. Recovery comes from the status table alone: a redelivered message finds the job still
leased and does nothing, and the sweeper re-drives the job once its lease has expired; prefetched
messages that died with the worker are re-published by the sweeper.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from testkit.waiting import wait_for
from testkit.workers import Stack, assert_all_succeeded, assert_provisioned_once
from worker.jobs.models import ProvisioningJob
from worker.jobs.states import JobStatus

STEPS: dict[str, Callable[[ProvisioningJob], bool]] = {
    # creating the site: no checkpoint yet
    "site": lambda job: "site" not in job.progress,
    # the site is checkpointed, the goals are not all done
    "goals": lambda job: job.progress.site is not None and len(job.progress.goals) < 2,
    # goals done, the shared link not yet
    "shared_links": lambda job: len(job.progress.goals) == 2 and not job.progress.shared_links,
}


def test_sigkilled_workers_lose_nothing_and_duplicate_nothing(stack: Stack) -> None:
    stack.sandbox.configure(latency_ms=150)
    worker = stack.start_worker(pool="prefork", concurrency=2)
    ids = stack.submit_sites(f"crash{n}.example.com" for n in range(20))

    def running_at(step: str) -> list[ProvisioningJob]:
        return [j for j in stack.jobs(ids) if j.status == JobStatus.running and STEPS[step](j)]

    interrupted: list[tuple[str, str]] = []  # (job id, the step it was in when its process died)
    for step in STEPS:
        victims = wait_for(
            lambda step=step: running_at(step),  # type: ignore[misc]
            timeout=20,
            interval=0.02,
            describe=lambda step=step: f"a job running at step {step!r}\n{stack.logs()}",  # type: ignore[misc]
        )
        assert worker.kill_pool(), "no pool processes to kill"
        interrupted += [(job.id, step) for job in victims]
        # The main process forks replacements; wait for them before the next kill.
        wait_for(
            lambda: len(worker.pool_pids()) == 2, timeout=10, describe="replacement pool processes"
        )

    # Now the whole worker, main process included, while jobs are running.
    victims = wait_for(
        lambda: [j for j in stack.jobs(ids) if j.status == JobStatus.running],
        timeout=20,
        interval=0.02,
        describe="a running job before killing the whole worker",
    )
    worker.kill()
    interrupted += [(job.id, "whole worker") for job in victims]
    stack.restart(worker)

    jobs = stack.wait_done(ids, timeout=60)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)
    # Every job caught running when its process was killed was re-driven, not lost or skipped.
    by_id = {job.id: job for job in jobs}
    not_rerun = [(by_id[i].domain, step) for i, step in interrupted if by_id[i].attempts < 2]
    assert not not_rerun, f"killed mid-job yet finished in one attempt: {not_rerun}"
    assert {step for _, step in interrupted} == {*STEPS, "whole worker"}


def test_sigterm_finishes_running_jobs_and_hands_back_the_rest(stack: Stack) -> None:
    """A deploy: the worker is asked to stop while jobs run and more wait in the broker."""
    stack.sandbox.configure(latency_ms=150)
    worker = stack.start_worker(concurrency=2)
    ids = stack.submit_sites(f"deploy{n}.example.com" for n in range(12))
    running = wait_for(
        lambda: [j.id for j in stack.jobs(ids) if j.status == JobStatus.running],
        timeout=20,
        interval=0.02,
        describe="a running job",
    )
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=30) == 0, worker.log_tail()

    after_stop = {job.id: job for job in stack.jobs(ids)}
    # Warm shutdown: what was running finished, in its first attempt; nothing is left leased.
    assert all(after_stop[i].status == JobStatus.succeeded for i in running), [
        (after_stop[i].domain, after_stop[i].status.value) for i in running
    ]
    assert not [j for j in after_stop.values() if j.status == JobStatus.running]

    stack.start_worker(concurrency=2)
    jobs = stack.wait_done(ids, timeout=60)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)
    assert all(job.attempts == 1 for job in jobs), [(j.domain, j.attempts) for j in jobs]
