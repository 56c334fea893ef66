"""Permanent errors: each fails its job with its code on the first attempt, and the worker sends
no request beyond the ones that established the error (counted by the sandbox). Errors of the
account instead (a refused key, no Sites API, the site limit) pause it: its jobs wait, queued,
and no second call goes out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from producers.events import parse_event
from testkit.sandbox_process import SandboxProcess
from testkit.waiting import wait_for
from testkit.workers import Stack, provision_request
from worker.jobs.specs import JobRequest
from worker.jobs.states import JobStatus
from worker.pauses import Pauses


@dataclass(frozen=True)
class Case:
    code: str
    http_status: int
    #: Prepares the sandbox; returns the API key the worker uses and the request to run.
    setup: Callable[[SandboxProcess], tuple[str, JobRequest]]
    #: Requests the job makes before giving up, each answered with these statuses.
    responses: dict[str, int]


def _invalid_key(sandbox: SandboxProcess) -> tuple[str, JobRequest]:
    return "no-such-key", provision_request("badkey.example.com")


def _no_sites_api(sandbox: SandboxProcess) -> tuple[str, JobRequest]:
    team = sandbox.add_team(name="Stats only", features=["StatsAPI", "SharedLinks"])
    sandbox.add_key(key="stats-plan-key", team=team["id"])
    return "stats-plan-key", provision_request("nosites.example.com")


def _site_limit(sandbox: SandboxProcess) -> tuple[str, JobRequest]:
    team = sandbox.add_team(name="Small plan", site_limit=1)
    sandbox.add_key(key="small-plan-key", team=team["id"])
    with sandbox.client("small-plan-key") as client:
        client.post("/api/v1/sites", json={"domain": "first.example.com"}).raise_for_status()
    return "small-plan-key", provision_request("second.example.com")


def _domain_taken(sandbox: SandboxProcess) -> tuple[str, JobRequest]:
    assert sandbox.other_team_api_key is not None
    with sandbox.client(sandbox.other_team_api_key) as client:
        client.post("/api/v1/sites", json={"domain": "taken.example.com"}).raise_for_status()
    return sandbox.api_key, provision_request("taken.example.com")


def _unknown_site(sandbox: SandboxProcess) -> tuple[str, JobRequest]:
    return sandbox.api_key, parse_event(
        {"type": "site.delete", "domain": "never.example.com"}
    ).request


def _unknown_goal(sandbox: SandboxProcess) -> tuple[str, JobRequest]:
    with sandbox.client() as client:
        client.post("/api/v1/sites", json={"domain": "goals.example.com"}).raise_for_status()
    event = {"type": "goal.delete", "domain": "goals.example.com", "goal_id": 987654}
    return sandbox.api_key, parse_event(event).request


ACCOUNT_CASES = {
    "invalid_api_key": Case("invalid_api_key", 401, _invalid_key, {"401": 1}),
    "sites_api_unavailable": Case("sites_api_unavailable", 402, _no_sites_api, {"402": 1}),
    "site_limit_reached": Case("site_limit_reached", 402, _site_limit, {"402": 1}),
}
CASES = {
    # POST answers "taken"; the GET that would adopt it is refused: another team's site.
    "domain_taken": Case("domain_taken", 400, _domain_taken, {"400": 1, "401": 1}),
    "site_not_found": Case("site_not_found", 404, _unknown_site, {"404": 1}),
    "goal_not_found": Case("goal_not_found", 404, _unknown_goal, {"404": 1}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_permanent_error_fails_the_job_at_once(sqlite_stack: Stack, case: Case) -> None:
    sandbox = sqlite_stack.sandbox
    api_key, request = case.setup(sandbox)
    before = sandbox.state()["counters"]
    sqlite_stack.start_worker(concurrency=1, api_key=api_key)

    job_id = sqlite_stack.submit(request, key=f"evt-{case.code}").job.id
    (job,) = sqlite_stack.wait_done([job_id], timeout=20)

    assert job.status == JobStatus.failed, (job.status, job.error_code, job.error_message)
    assert job.error_code == case.code, job.error_message
    assert job.error_status == case.http_status
    assert job.attempts == 1
    assert job.next_attempt_at is None
    assert job.lease_token is None
    after = sandbox.state()["counters"]
    assert _spent(before, after) == case.responses
    assert after["total"] - before["total"] == sum(case.responses.values())


def _spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    counts = {
        s: after["by_status"].get(s, 0) - before["by_status"].get(s, 0) for s in after["by_status"]
    }
    return {s: n for s, n in counts.items() if n}


@pytest.mark.parametrize("case", ACCOUNT_CASES.values(), ids=list(ACCOUNT_CASES))
def test_an_account_error_pauses_the_account_and_its_jobs_wait(
    sqlite_stack: Stack, case: Case
) -> None:
    sandbox = sqlite_stack.sandbox
    api_key, request = case.setup(sandbox)
    before = sandbox.state()["counters"]
    ids = [
        sqlite_stack.submit(request, key=f"evt-{case.code}").job.id,
        sqlite_stack.submit(provision_request("later.example.com"), key="evt-later").job.id,
    ]
    sqlite_stack.start_worker(concurrency=1, api_key=api_key)
    pauses = Pauses(sqlite_stack.engine, cache_seconds=0)

    def held() -> bool:  # paused, and the scheduler no longer hands its jobs out
        jobs = sqlite_stack.jobs(ids)
        return bool(pauses.active()) and all(j.dispatched_at is None for j in jobs)

    wait_for(held, timeout=20, describe=lambda: f"the account paused\n{sqlite_stack.logs()}")
    jobs = sqlite_stack.jobs(ids)
    assert {j.status for j in jobs} == {JobStatus.queued}
    assert {j.error_code for j in jobs} <= {case.code, None}
    assert case.code in {j.error_code for j in jobs}
    assert all(j.attempts == 0 for j in jobs)  # waiting on the account is no attempt of a job's
    [pause] = pauses.active().values()
    assert pause.code == case.code
    after = sandbox.state()["counters"]
    assert _spent(before, after) == case.responses  # one call established it; no second one
    assert after["total"] - before["total"] == sum(case.responses.values())
