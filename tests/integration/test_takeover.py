"""Takeover through the worker registry: a worker process that stops beating has its running
jobs handed back by another, whatever host it ran on, and can never write over the new owner.

Leases are set far longer than the waits here (60 s), so only the heartbeats can explain a
takeover: the handback is the registry's, not a lease running out. The workers run the default
threads pool: one process each, whose heartbeat is that of every job it runs.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from sqlmodel import Session, select

from testkit.waiting import wait_for
from testkit.workers import Stack, WorkerProcess, assert_all_succeeded, assert_provisioned_once
from worker.jobs.models import ProvisioningJob, WorkerProcessRow
from worker.jobs.states import JobStatus

#: No lease ends during a test: a takeover can only come from the heartbeats.
LONG_LEASE = {"lease_seconds": 60, "task_time_limit": 120, "task_soft_time_limit": 90}
#: Another host, as far as process ids go: a PID namespace of its own (the worker is its pid 1).
OTHER_HOST = ("unshare", "--pid", "--fork", "--kill-child")


def registered(stack: Stack) -> list[WorkerProcessRow]:
    with Session(stack.engine, expire_on_commit=False) as session:
        return list(session.exec(select(WorkerProcessRow)).all())


def process_id_of(stack: Stack, pid: int) -> str:
    """The registry id of the worker whose process id (in its own namespace) is ``pid``."""
    rows = wait_for(
        lambda: [row for row in registered(stack) if row.pid == pid],
        timeout=20,
        describe=lambda: f"a registered process with pid {pid}: {registered(stack)}",
    )
    return rows[0].id


def running_under(stack: Stack, ids: list[str], owner: str) -> list[ProvisioningJob]:
    return [
        job
        for job in stack.jobs(ids)
        if job.status == JobStatus.running and job.lease_owner == owner
    ]


def test_a_worker_killed_on_another_host_has_its_jobs_taken_over_and_each_runs_once(
    stack: Stack,
) -> None:
    stack.sandbox.configure(latency_ms=150)
    here = stack.start_worker(pool="threads", concurrency=2, **LONG_LEASE)
    there = stack.start_worker(pool="threads", concurrency=2, prefix=OTHER_HOST, **LONG_LEASE)
    elsewhere = process_id_of(stack, 1)  # pid 1 in its namespace
    ids = stack.submit_sites(f"takeover{n}.example.com" for n in range(12))

    victims = wait_for(
        lambda: running_under(stack, ids, elsewhere),
        timeout=30,
        interval=0.02,
        describe=lambda: f"a job running on the other host\n{stack.logs()}",
    )
    there.kill()  # SIGKILL: no goodbye, no lease handed back

    jobs = stack.wait_done(ids, timeout=45)  # well within the 60 s lease
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)
    by_id = {job.id: job for job in jobs}
    assert all(by_id[job.id].attempts >= 2 for job in victims), [
        (by_id[j.id].domain, by_id[j.id].attempts) for j in victims
    ]
    assert all(by_id[job.id].lease_owner != elsewhere for job in victims)
    # The dead process left the registry; the live one is still there.
    assert [row.pid for row in registered(stack)] == [here.pid]
    assert f"worker process {elsewhere} silent" in here.log_path.read_text()


def objects(stack: Stack) -> dict[str, Any]:
    state = stack.sandbox.state()
    return {"sites": state["sites"], "goals": state["goals"]}


def _stop(worker: WorkerProcess, sig: signal.Signals) -> None:
    os.killpg(worker.pid, sig)


def test_a_stopped_worker_woken_after_its_jobs_were_taken_cannot_write_over_the_new_owner(
    stack: Stack,
) -> None:
    stack.sandbox.configure(latency_ms=150)
    stopped = stack.start_worker(pool="threads", concurrency=2, **LONG_LEASE)
    owner = process_id_of(stack, stopped.pid)
    ids = stack.submit_sites(f"frozen{n}.example.com" for n in range(8))
    victims = wait_for(
        lambda: running_under(stack, ids, owner),
        timeout=30,
        interval=0.02,
        describe=lambda: f"a running job\n{stack.logs()}",
    )
    _stop(stopped, signal.SIGSTOP)
    try:
        other = stack.start_worker(pool="threads", concurrency=2, **LONG_LEASE)
        jobs = stack.wait_done(ids, timeout=45)
        assert_all_succeeded(jobs)
        assert_provisioned_once(stack.sandbox.state(), jobs)
        before = {job.id: job.model_dump(warnings=False) for job in stack.jobs(ids)}
        api_before = objects(stack)
    finally:
        _stop(stopped, signal.SIGCONT)

    # Awake again: it finds out it was taken for dead, drops its claims and registers anew.
    wait_for(
        lambda: "taken for dead" in stopped.log_path.read_text(),
        timeout=20,
        describe=lambda: f"the woken worker to notice\n{stopped.log_tail()}",
    )
    wait_for(
        lambda: {row.pid for row in registered(stack)} == {stopped.pid, other.pid},
        timeout=20,
        describe=lambda: f"both workers registered: {registered(stack)}",
    )
    # Nothing it did after waking changed the status table or what the API holds.
    after = {job.id: job.model_dump(warnings=False) for job in stack.jobs(ids)}
    assert after == before
    assert objects(stack) == api_before
    by_id = {job.id: job for job in stack.jobs(ids)}
    assert all(by_id[job.id].attempts >= 2 for job in victims)
    assert all(by_id[job.id].lease_owner != owner for job in victims)
