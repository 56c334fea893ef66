"""Account-level errors pause the account: its jobs wait instead of failing one by one, no call
certain to fail goes out, and a new key or an operator's retry resumes it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from testkit.databases import migrated_engine
from testkit.fakes import RecordingDispatcher
from testkit.pipelines import api_requests, client_of, make_pipeline, provision
from testkit.sandbox_process import SandboxProcess
from worker.accounts import load_accounts
from worker.errors import QuotaWait
from worker.jobs.filters import JobFilter
from worker.jobs.specs import JobRequest
from worker.jobs.states import JobStatus, Operation
from worker.jobs.store import JobStore
from worker.pauses import Pauses, fingerprint, retry_matching
from worker.quota.limiter import Limiter
from worker.quota.scheduler import Scheduler
from worker.service import Pipeline
from worker.settings import Settings


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'p.db'}"))


def pausing(
    sandbox: SandboxProcess, store: JobStore, key: str = "test-key", base_url: str | None = None
) -> Pipeline:
    pipeline = make_pipeline(sandbox, store, key=key, base_url=base_url)
    return dataclasses.replace(pipeline, pauses=Pauses(store.engine))


def test_a_refused_key_pauses_the_account_and_its_other_jobs_make_no_call(
    sandbox: SandboxProcess, store: JobStore
) -> None:
    pipeline = pausing(sandbox, store, key="not-a-key")
    first, second = (store.enqueue(provision(f"s{n}.example.com")).job for n in range(2))
    assert pipeline.run(first.id) is JobStatus.queued  # waits; not failed
    held = store.get(first.id)
    assert held is not None
    assert (held.error_code, held.attempts) == ("invalid_api_key", 0)
    assert "account default paused (invalid_api_key)" in (held.error_message or "")
    before = api_requests(sandbox)
    assert pipeline.run(second.id) is JobStatus.queued
    assert api_requests(sandbox) == before  # certain to fail: not sent
    [pause] = Pauses(store.engine).active().values()
    assert pause.key_fingerprint == fingerprint("not-a-key")
    assert "not-a-key" not in repr(pause)


def test_a_base_url_with_no_api_pauses_the_account_until_fixed_and_resumed(
    sandbox: SandboxProcess, store: JobStore
) -> None:
    """``/api/v1`` on the base URL: every call meets the router's 404, not Plausible's. The
    account pauses, saying which URL to set; its jobs wait, and run once it is set and resumed."""
    wrong = pausing(sandbox, store, base_url=f"{sandbox.base_url}/api/v1")
    first, second = (store.enqueue(provision(f"u{n}.example.com")).job for n in range(2))
    assert wrong.run(first.id) is JobStatus.queued  # waits; not failed
    held = store.get(first.id)
    assert held is not None
    assert (held.status, held.error_code, held.attempts) == (JobStatus.queued, "wrong_base_url", 0)
    assert "account default paused (wrong_base_url)" in (held.error_message or "")
    assert f"set PLAUSIBLE_BASE_URL={sandbox.base_url} (without /api/v1). Its jobs wait" in (
        held.error_message or ""
    )
    assert api_requests(sandbox) == 1  # the create, answered by the router
    assert wrong.run(second.id) is JobStatus.queued
    assert api_requests(sandbox) == 1  # certain to fail: not sent
    [pause] = Pauses(store.engine).active().values()
    assert (pause.code, pause.scope) == ("wrong_base_url", "all")
    assert "test-key" not in pause.message

    assert pausing(sandbox, store).run(first.id) is JobStatus.queued  # set right, still paused
    retried = retry_matching(store, JobFilter(account="default"))  # provision retry --account
    assert retried.resumed == ["default"]
    assert sorted(retried.ids) == sorted([first.id, second.id])
    fixed = pausing(sandbox, store)
    assert [fixed.run(job.id) for job in (first, second)] == [JobStatus.succeeded] * 2
    assert sorted(site["domain"] for site in sandbox.state()["sites"]) == [
        "u0.example.com",
        "u1.example.com",
    ]


def test_the_site_limit_pauses_new_sites_only(sandbox: SandboxProcess, store: JobStore) -> None:
    team = sandbox.add_team(name="Small", site_limit=1)
    sandbox.add_key(key="small-key", team=team["id"])
    pipeline = pausing(sandbox, store, key="small-key")
    client_of(pipeline).create_site("kept.example.com")
    new = store.enqueue(provision("new.example.com")).job
    assert pipeline.run(new.id) is JobStatus.queued
    gone = store.enqueue(JobRequest(operation=Operation.delete_site, domain="kept.example.com"))
    assert pipeline.run(gone.job.id) is JobStatus.succeeded  # deletes still run
    [pause] = Pauses(store.engine).active().values()
    assert (pause.code, pause.scope) == ("site_limit_reached", "provision")


def test_a_key_refused_for_another_teams_site_fails_that_job_only(
    sandbox: SandboxProcess, store: JobStore
) -> None:
    with sandbox.client("other-team-key") as other:
        assert other.post("/api/v1/sites", json={"domain": "theirs.example.com"}).is_success
    pipeline = pausing(sandbox, store)
    job = store.enqueue(JobRequest(operation=Operation.delete_site, domain="theirs.example.com"))
    assert pipeline.run(job.job.id) is JobStatus.failed  # one probe showed the key is fine
    assert Pauses(store.engine).active() == {}


def test_a_probe_that_cannot_run_now_leaves_the_job_to_try_again(
    sandbox: SandboxProcess, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 on a delete needs a probe to tell the account's fault from the site's; with no
    room for it, the job goes back to the scheduler instead of crashing or failing."""
    with sandbox.client("other-team-key") as other:
        assert other.post("/api/v1/sites", json={"domain": "theirs.example.com"}).is_success
    pipeline = pausing(sandbox, store)

    def no_room(self: Pipeline, run: object, exc: object) -> bool:
        raise QuotaWait("no room in this window", retry_at=0.0)

    monkeypatch.setattr(Pipeline, "_account_wide", no_room)
    job = store.enqueue(JobRequest(operation=Operation.delete_site, domain="theirs.example.com"))
    assert pipeline.run(job.job.id) is JobStatus.queued
    held = store.get(job.job.id)
    assert held is not None
    assert (held.status, held.error_code, held.lease_token) == (
        JobStatus.queued,
        "invalid_api_key",
        None,
    )
    assert Pauses(store.engine).active() == {}


def test_the_scheduler_admits_nothing_of_a_paused_account_until_its_key_changes(
    store: JobStore, tmp_path: Path
) -> None:
    pauses = Pauses(store.engine)
    pauses.pause("default", "invalid_api_key", "Invalid API key.", "old-key")
    job = store.enqueue(provision("a.example.com")).job
    limiter = Limiter(store.engine, guard=0.05)

    def scheduler(key: str) -> Scheduler:
        accounts = load_accounts(Settings(plausible_api_key=key))  # type: ignore[arg-type]
        return Scheduler(store, limiter, accounts, RecordingDispatcher(), Pauses(store.engine))

    assert scheduler("old-key").tick() == []  # still the refused key: still paused
    assert scheduler("new-key").tick() == [job.id]  # another key: resumed, admitted
    assert pauses.active() == {}


def test_an_operators_retry_resumes_the_account_and_its_held_jobs(store: JobStore) -> None:
    pauses = Pauses(store.engine)
    jobs = [store.enqueue(provision(f"r{n}.example.com"), batch="B").job for n in range(3)]
    pauses.pause("default", "sites_api_unavailable", "No Sites API.", None)
    retried = retry_matching(store, JobFilter(batch_id="B"))
    assert retried.resumed == ["default"]
    assert sorted(retried.ids) == sorted(job.id for job in jobs)
    assert pauses.active() == {}
