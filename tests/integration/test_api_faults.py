"""An unreliable API: 500s and dropped responses. Every job succeeds, and nothing is created twice.

The sandbox runs with a fixed seed, answers 20 % of requests with a 500 (without acting on them)
and carries out 5 % but never answers them. A dropped ``POST /sites`` did create the site, so the
retry finds the domain taken: the worker must look the site up and adopt it, never fail the job
and never create a second site.

To make sure adoption is exercised on every run (at 5 % it might not be, for a few dozen sites),
a first batch runs while *every* response is dropped: those jobs create their sites and park as
transient failures; when the API recovers they must adopt them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from testkit.sandbox_process import SandboxProcess
from testkit.waiting import wait_for
from testkit.workers import Stack, assert_all_succeeded, assert_provisioned_once
from worker.jobs.models import ProvisioningJob
from worker.jobs.states import JobStatus

SEED = 20261128


@pytest.fixture(scope="module")
def seeded_sandbox() -> Iterator[SandboxProcess]:
    with SandboxProcess(extra_args=["--seed", str(SEED)]) as process:
        yield process


def test_faulty_api_every_job_succeeds_and_lost_creates_are_adopted(
    seeded_sandbox: SandboxProcess,
    redis_url: str,
    sqlite_url: str,
    make_stack: Callable[..., Stack],
) -> None:
    seeded_sandbox.reset()
    stack = make_stack(redis_url, sqlite_url, on=seeded_sandbox)
    stack.start_worker(concurrency=2)

    # Phase 1: every response lost. The sites get created; the jobs cannot know it and park.
    seeded_sandbox.configure(drop_rate=1.0)
    lost = stack.submit_sites(f"lost{n}.example.com" for n in range(6))

    def all_parked() -> list[ProvisioningJob] | None:
        # One read: the sweeper hands a parked job back as soon as its short backoff ends.
        jobs = stack.jobs(lost)
        return jobs if all(j.status == JobStatus.waiting for j in jobs) else None

    parked = wait_for(
        all_parked,
        timeout=30,
        describe=lambda: f"the jobs to park; {stack.status_counts(lost)}\n{stack.logs()}",
    )
    assert {j.error_code for j in parked} == {"network_error"}, {j.error_code for j in parked}
    assert all(j.next_attempt_at is not None for j in parked)
    assert {s["domain"] for s in seeded_sandbox.state()["sites"]} == {j.domain for j in parked}

    # Phase 2: the API recovers to 20 % errors and 5 % dropped responses.
    seeded_sandbox.configure(drop_rate=0.05, fail_rate=0.2)
    rest = stack.submit_sites(f"flaky{n}.example.com" for n in range(40))

    jobs = stack.wait_done(lost + rest, timeout=90)
    assert_all_succeeded(jobs)
    state = seeded_sandbox.state()
    assert_provisioned_once(state, jobs)
    adopted = {j.domain for j in jobs if j.progress.site and j.progress.site.adopted}
    assert {j.domain for j in parked} <= adopted, (
        f"not adopted: {({j.domain for j in parked}) - adopted}"
    )
    counters = state["counters"]
    assert counters["failed_injected"] > 0
    assert counters["dropped"] > 0
