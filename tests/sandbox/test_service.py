"""The pipeline's steps against the sandbox over HTTP, with a SQLite status table and no Celery."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from testkit.clock import FakeClock
from testkit.databases import migrated_engine
from testkit.pipelines import (
    EVENT,
    PAGE,
    api_requests,
    client_of,
    expire_lease,
    make_due,
    make_pipeline,
    provision,
)
from testkit.sandbox_process import SandboxProcess
from worker.jobs.specs import GoalSpec, JobRequest, Progress, SiteRecord
from worker.jobs.states import JobStatus, Operation
from worker.jobs.store import JobStore
from worker.leases import LeaseKeeper
from worker.plausible import PlausibleClient
from worker.retrying import RetryPolicy
from worker.service import Pipeline


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'jobs.db'}"))


def test_provision_creates_site_goals_and_links_and_records_them(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    job = store.enqueue(provision()).job
    assert pipeline.run(job.id) is JobStatus.succeeded
    done = store.get(job.id)
    assert done is not None
    state = sandbox.state()
    assert [s["domain"] for s in state["sites"]] == ["shop.example.com"]
    assert {g["id"] for g in state["goals"]} == {g.id for g in done.progress.goals.values()}
    assert done.progress.site.model_dump() == {
        "domain": "shop.example.com",
        "timezone": "Europe/Berlin",
        "adopted": False,
        "existed": False,
    }
    assert done.progress.shared_links["WordPress"].startswith(
        f"{sandbox.base_url}/share/shop.example.com?auth="
    )


def test_resumed_job_skips_finished_steps(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    job = store.enqueue(provision()).job
    claim = store.claim(job.id, lease_seconds=0)  # a worker that died right after creating the site
    assert claim is not None
    site = client_of(pipeline).create_site("shop.example.com", timezone="Europe/Berlin")
    store.checkpoint(
        claim,
        Progress(site=SiteRecord(domain=site.domain, timezone=site.timezone)),
        lease_seconds=0,
    )
    before = api_requests(sandbox)
    assert pipeline.run(job.id) is JobStatus.succeeded
    # two goals and one link; no second create, no lookup
    assert api_requests(sandbox) - before == 3


def test_a_create_whose_answer_was_lost_is_adopted_as_ours(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    job = store.enqueue(provision()).job
    sandbox.configure(drop_rate=1.0)  # the create happens, its answer is lost (every try)
    assert pipeline.run(job.id) is JobStatus.waiting
    sandbox.configure(drop_rate=0)
    make_due(store, job.id)
    assert pipeline.run(job.id) is JobStatus.succeeded
    done = store.get(job.id)
    assert done is not None
    assert done.progress.site is not None
    assert (done.progress.site.adopted, done.progress.site.existed) == (True, False)
    assert len(sandbox.state()["sites"]) == 1


def test_a_site_already_in_the_account_is_adopted_and_marked_as_existing(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    client_of(pipeline).create_site("shop.example.com")  # made before the job, by someone else
    job = store.enqueue(provision()).job
    assert pipeline.run(job.id) is JobStatus.succeeded
    done = store.get(job.id)
    assert done is not None
    assert done.progress.site is not None
    assert (done.progress.site.adopted, done.progress.site.existed) == (True, True)
    assert len(sandbox.state()["sites"]) == 1


class _DiesAfterSending(httpx.BaseTransport):
    """Sends the request, then the worker dies before it can read (let alone record) the
    answer: what a SIGKILL between Plausible's commit and our checkpoint looks like."""

    def __init__(self, dies_on: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.dies_on = dies_on

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == self.dies_on:
            response.read()
            raise _Killed
        return response


class _Killed(BaseException):
    """Not an Exception: nothing in the pipeline may catch it, as nothing survives a SIGKILL."""


@pytest.mark.parametrize("operation", ["delete_site", "delete_goal"])
def test_a_delete_carried_out_by_a_worker_killed_before_the_answer_counts_as_done(
    sandbox: SandboxProcess, store: JobStore, operation: str
) -> None:
    first = make_pipeline(sandbox, store)
    site = client_of(first).create_site("shop.example.com")
    goal = client_of(first).ensure_goal(site.domain, goal_type="event", event_name="Signup")
    request = (
        JobRequest(operation=Operation.delete_site, domain=site.domain)
        if operation == "delete_site"
        else JobRequest(operation=Operation.delete_goal, domain=site.domain, goal_id=goal.id)
    )
    job = store.enqueue(request).job
    dying = dataclasses.replace(
        first,
        clients={
            "default": PlausibleClient(
                base_url=sandbox.base_url,
                api_key="test-key",
                transport=_DiesAfterSending("DELETE"),
            )
        },
    )
    with pytest.raises(_Killed):
        dying.run(job.id)
    assert sandbox.state()["goals" if operation == "delete_goal" else "sites"] == []
    expire_lease(store, job.id)
    assert first.run(job.id) is JobStatus.succeeded  # the 404 that follows means it was done
    done = store.get(job.id)
    assert done is not None
    assert done.progress.already_gone is True


def test_dropped_responses_are_retried_without_duplicates(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    sandbox.configure(drop_rate=0.5, fail_rate=0.2, burst_limit=100_000, hourly_limit=100_000)
    pipeline = dataclasses.replace(pipeline, max_attempts=100)
    jobs = [store.enqueue(provision(f"site{n}.example.com")).job for n in range(6)]
    for job in jobs:
        for _ in range(100):
            status = pipeline.run(job.id)
            if status is not JobStatus.waiting:
                break
            make_due(store, job.id)  # parked after its in-process retries: due again at once
        done = store.get(job.id)
        assert done is not None
        assert status is JobStatus.succeeded, (done.error_code, done.error_message)
    sandbox.configure(drop_rate=0, fail_rate=0)
    state = sandbox.state()
    assert sorted(s["domain"] for s in state["sites"]) == sorted(
        f"site{n}.example.com" for n in range(6)
    )
    assert len(state["goals"]) == 12
    assert sum(len(s["shared_links"]) for s in state["sites"]) == 6


def test_domain_of_another_team_fails_with_domain_taken(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    with sandbox.client("other-team-key") as other:
        assert other.post("/api/v1/sites", json={"domain": "shop.example.com"}).status_code == 200
    job = store.enqueue(provision()).job
    assert pipeline.run(job.id) is JobStatus.failed
    done = store.get(job.id)
    assert done is not None
    assert (done.error_code, done.attempts) == ("domain_taken", 1)


def test_permanent_error_fails_at_once_without_retries(
    sandbox: SandboxProcess, store: JobStore
) -> None:
    pipeline = make_pipeline(sandbox, store, key="stats-key")
    job = store.enqueue(provision()).job
    before = api_requests(sandbox)
    assert pipeline.run(job.id) is JobStatus.failed
    done = store.get(job.id)
    assert done is not None
    assert (done.error_code, done.error_status) == ("invalid_api_key", 401)
    assert api_requests(sandbox) - before == 1


def test_a_429_hands_the_job_back_and_shuts_the_window_for_every_job(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    sandbox.configure(burst_limit=0, burst_seconds=60)  # someone else spent the team's quota
    first, second = (store.enqueue(provision(f"s{n}.example.com")).job for n in range(2))
    before = api_requests(sandbox)
    assert pipeline.run(first.id) is JobStatus.queued
    back = store.get(first.id)
    assert back is not None
    assert (back.error_code, back.attempts, back.dispatched_at) == ("rate_limited", 0, None)
    assert api_requests(sandbox) - before == 1  # a 429 is never retried on the spot

    assert pipeline.run(second.id) is JobStatus.queued
    assert api_requests(sandbox) - before == 1  # the window is shut: not one more request
    waiting = store.get(second.id)
    assert waiting is not None
    assert (waiting.error_code, waiting.attempts) == ("quota_wait", 0)


def test_a_job_whose_calls_do_not_fit_waits_at_its_checkpoint_without_calling(
    sandbox: SandboxProcess, store: JobStore
) -> None:
    pipeline = make_pipeline(sandbox, store, burst_limit=2, burst_seconds=3600)
    job = store.enqueue(provision()).job  # 4 calls: the site, 2 goals, a link
    assert pipeline.run(job.id) is JobStatus.queued
    back = store.get(job.id)
    assert back is not None
    assert back.error_code == "quota_wait"
    # The site and one goal went out, then the window was full: the job stopped before the
    # third call, checkpointed, and no request was refused.
    assert back.progress.site is not None
    assert len(back.progress.goals) == 1
    assert sandbox.state()["counters"]["rate_limited"] == 0
    client_of(pipeline).close()


def test_transient_failures_park_the_job_with_backoff(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    sandbox.configure(fail_rate=1.0)
    job = store.enqueue(provision()).job
    assert pipeline.run(job.id) is JobStatus.waiting
    parked = store.get(job.id)
    assert parked is not None
    assert (parked.error_code, parked.attempts) == ("server_error", 1)
    assert sandbox.state()["sites"] == []


def test_delete_site_counts_404_after_an_earlier_attempt_as_done(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    client_of(pipeline).create_site("shop.example.com")
    job = store.enqueue(JobRequest(operation=Operation.delete_site, domain="shop.example.com")).job
    sandbox.configure(drop_rate=1.0)  # the delete happens, its answer is lost
    assert pipeline.run(job.id) is JobStatus.waiting
    sandbox.configure(drop_rate=0)
    make_due(store, job.id)
    assert pipeline.run(job.id) is JobStatus.succeeded
    done = store.get(job.id)
    assert done is not None
    assert done.progress.already_gone is True
    assert sandbox.state()["sites"] == []


def test_delete_of_an_unknown_site_fails(store: JobStore, pipeline: Pipeline) -> None:
    job = store.enqueue(
        JobRequest(operation=Operation.delete_site, domain="nobody.example.com")
    ).job
    assert pipeline.run(job.id) is JobStatus.failed
    done = store.get(job.id)
    assert done is not None
    assert done.error_code == "site_not_found"


def test_delete_goal_by_event_name_uses_our_records(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    created = store.enqueue(provision()).job
    assert pipeline.run(created.id) is JobStatus.succeeded
    job = store.enqueue(
        JobRequest(operation=Operation.delete_goal, domain="shop.example.com", goal=EVENT)
    ).job
    before = api_requests(sandbox)
    assert pipeline.run(job.id) is JobStatus.succeeded
    assert api_requests(sandbox) - before == 1  # the DELETE alone: the id came from the table
    assert [g["event_name"] for g in sandbox.state()["goals"]] == [None]


def test_delete_goal_by_page_path_falls_back_to_the_goals_list(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    client_of(pipeline).create_site("shop.example.com")
    client_of(pipeline).ensure_goal("shop.example.com", goal_type="page", page_path="/pricing/*")
    job = store.enqueue(
        JobRequest(operation=Operation.delete_goal, domain="shop.example.com", goal=PAGE)
    ).job
    assert pipeline.run(job.id) is JobStatus.succeeded
    assert sandbox.state()["goals"] == []


def test_delete_of_an_unknown_goal_id_fails(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    client_of(pipeline).create_site("shop.example.com")
    job = store.enqueue(
        JobRequest(operation=Operation.delete_goal, domain="shop.example.com", goal_id=999)
    ).job
    assert pipeline.run(job.id) is JobStatus.failed
    done = store.get(job.id)
    assert done is not None
    assert (done.error_code, done.error_status) == ("goal_not_found", 404)


def test_job_that_keeps_dying_is_failed_after_max_attempts(
    store: JobStore, pipeline: Pipeline
) -> None:
    job = store.enqueue(provision()).job
    for _ in range(pipeline.max_attempts):
        assert store.claim(job.id, lease_seconds=0) is not None  # claimed, then the worker died
    assert pipeline.run(job.id) is JobStatus.failed
    done = store.get(job.id)
    assert done is not None
    assert done.error_code == "too_many_attempts"


def test_a_long_step_keeps_its_lease_through_the_heartbeat_so_no_one_takes_the_job_over(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    clock = FakeClock()
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'lease.db'}"), clock=clock)
    keeper = LeaseKeeper(store, 60)
    takeovers: list[object] = []
    job = store.enqueue(provision()).job

    def backoff(_: float) -> None:
        # Each retry of the failing create waits 40 s by the store's clock, past the 60 s lease
        # after two; the heartbeat renews it meanwhile, and a second worker tries to take the
        # job over every time.
        clock.advance(40)
        keeper.renew_all()
        takeovers.append(store.claim(job.id, lease_seconds=60))

    pipeline = dataclasses.replace(
        make_pipeline(sandbox, store),
        lease_seconds=60,
        keeper=keeper,
        policy=RetryPolicy(max_attempts=4, max_elapsed_seconds=1e9, sleep=backoff),
    )
    sandbox.configure(fail_rate=1.0)
    assert pipeline.run(job.id) is JobStatus.waiting  # 4 failed tries, 120 s, then parked
    assert takeovers == [None, None, None]
    client_of(pipeline).close()


def test_a_slow_job_hands_its_slot_back_at_checkpoints_and_finishes(
    sandbox: SandboxProcess, store: JobStore
) -> None:
    sandbox.configure(latency_ms=60)
    pipeline = dataclasses.replace(make_pipeline(sandbox, store), time_budget=0.2)
    goals = tuple(GoalSpec(goal_type="event", event_name=f"Step{n}") for n in range(12))
    job = store.enqueue(provision().model_copy(update={"goals": goals})).job
    runs = []
    while (status := pipeline.run(job.id)) is JobStatus.queued:
        back = store.get(job.id)
        assert back is not None
        assert back.error_code == "time_budget"
        runs.append(len(back.progress.goals))
        assert len(runs) < 30, runs
    assert status is JobStatus.succeeded
    assert len(runs) >= 2  # it yielded more than once...
    assert runs == sorted(runs)  # ...each time further on, resuming where it stopped
    done = store.get(job.id)
    assert done is not None
    assert done.attempts == 1  # handing the slot back is not a failed attempt
    assert len(done.progress.goals) == 12
    assert len(sandbox.state()["goals"]) == 12  # every goal made once


def test_a_run_stopped_by_a_time_limit_resumes_instead_of_failing(
    sandbox: SandboxProcess, store: JobStore
) -> None:
    class SoftLimit(Exception):
        """As Celery's SoftTimeLimitExceeded: raised in the middle of whatever runs."""

    pipeline = dataclasses.replace(make_pipeline(sandbox, store), interruptions=(SoftLimit,))
    limited = dataclasses.replace(
        pipeline,
        policy=RetryPolicy(max_attempts=1, sleep=lambda _: None),
        clients={"default": _Interrupting(client_of(pipeline), SoftLimit, after=2)},
    )
    job = store.enqueue(provision()).job
    assert limited.run(job.id) is JobStatus.queued
    back = store.get(job.id)
    assert back is not None
    assert back.error_code == "interrupted"
    assert back.progress.site is not None  # what was done before the interruption is kept
    assert pipeline.run(job.id) is JobStatus.succeeded


class _Interrupting:
    """A client whose ``after``-th request is interrupted, the way a signal interrupts."""

    def __init__(self, inner: PlausibleClient, error: type[Exception], after: int) -> None:
        self.inner, self.error, self.left = inner, error, after

    def using(self, gate: object) -> _Interrupting:
        self.inner = self.inner.using(gate)  # type: ignore[arg-type]
        return self

    def __getattr__(self, name: str) -> object:
        method = getattr(self.inner, name)

        def call(*args: object, **kwargs: object) -> object:
            self.left -= 1
            if self.left == 0:
                raise self.error
            return method(*args, **kwargs)

        return call


def test_retrying_a_failed_delete_of_an_unknown_site_fails_again(
    store: JobStore, pipeline: Pipeline
) -> None:
    job = store.enqueue(
        JobRequest(operation=Operation.delete_site, domain="nobody.example.com")
    ).job
    assert pipeline.run(job.id) is JobStatus.failed
    assert store.retry(job.id)
    assert pipeline.run(job.id) is JobStatus.failed  # a definite 404 never counts as "already gone"


def test_delete_goal_looks_again_when_our_record_is_stale(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    created = store.enqueue(provision()).job
    assert pipeline.run(created.id) is JobStatus.succeeded
    recorded = store.goal_id_from_history("shop.example.com", EVENT.natural_key)
    # Someone deletes the goal in Plausible's UI and makes it again: it gets a new id.
    client_of(pipeline).delete_goal("shop.example.com", recorded)
    again = client_of(pipeline).ensure_goal(
        "shop.example.com", goal_type="event", event_name="Signup"
    )
    assert again.id != recorded
    job = store.enqueue(
        JobRequest(operation=Operation.delete_goal, domain="shop.example.com", goal=EVENT)
    ).job
    assert pipeline.run(job.id) is JobStatus.succeeded
    done = store.get(job.id)
    assert done is not None
    assert (done.progress.goal_id, done.progress.goal_id_source) == (again.id, "list")
    assert "Signup" not in [g["event_name"] for g in sandbox.state()["goals"]]


def test_an_unforeseen_crash_fails_the_job_instead_of_looping(
    store: JobStore, pipeline: Pipeline
) -> None:
    # A lone surrogate cannot be encoded into the request; edge validation normally stops it.
    broken = GoalSpec(goal_type="event", event_name="Sign\ud800up")
    job = store.enqueue(
        JobRequest(operation=Operation.provision_site, domain="shop.example.com", goals=(broken,))
    ).job
    assert pipeline.run(job.id) is JobStatus.failed
    done = store.get(job.id)
    assert done is not None
    assert done.error_code == "internal_error"
    assert done.progress.site is not None
    assert done.progress.site.domain == "shop.example.com"
