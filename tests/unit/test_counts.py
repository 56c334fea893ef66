"""The counts the database keeps (``job_counts``, by trigger), on SQLite and PostgreSQL: equal to
a fresh count of the jobs after every kind of transition, and what a batch's summary, the quota
report and the scheduler read instead of counting the backlog."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from testkit.clock import FakeClock
from testkit.databases import migrated_engine
from testkit.inventory import kept_counts, recounted
from worker.jobs.filters import JobFilter
from worker.jobs.intake import BatchOf, NewJob
from worker.jobs.specs import GoalSpec, JobRequest, Progress, SiteRecord
from worker.jobs.states import JobStatus, Operation, Priority
from worker.jobs.store import JobStore


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[JobStore]:
    engine = migrated_engine(database_url)
    yield JobStore(engine, clock=clock)
    engine.dispose()


def provision(domain: str, goals: int = 2) -> JobRequest:
    return JobRequest(
        operation=Operation.provision_site,
        domain=domain,
        goals=tuple(GoalSpec(goal_type="event", event_name=f"G{n}") for n in range(goals)),
        shared_links=("Dashboard",),
    )


def assert_exact(store: JobStore) -> None:
    assert kept_counts(store.engine) == recounted(store.engine)


def test_the_counts_equal_a_fresh_count_after_every_transition(
    store: JobStore, clock: FakeClock
) -> None:
    items = [NewJob(f"k{n}", provision(f"s{n}.example.com"), Priority.bulk) for n in range(8)]
    ids = list(
        store.enqueue_many(items, batch=BatchOf("b1", "signups.csv", "import")).created.values()
    )
    signup = store.enqueue(provision("new.example.com"), source="http").job.id
    assert_exact(store)
    assert store.admit({ids[0]: {"burst:1": 4}, ids[1]: {"burst:1": 4}, signup: {}}) == {
        ids[0]: False,
        ids[1]: False,
        signup: False,
    }
    assert_exact(store)
    claims = [store.claim(job_id, lease_seconds=30) for job_id in (ids[0], ids[1], signup)]
    assert all(claims)
    first, second, third = claims
    assert first is not None
    assert second is not None
    assert third is not None
    halfway = Progress(site=SiteRecord(domain="s0.example.com", timezone="UTC"))
    store.checkpoint(first, halfway, lease_seconds=30)  # 3 calls left instead of 4
    assert_exact(store)
    store.park(
        first,
        until=clock() + timedelta(seconds=5),
        code="server_error",
        message="503",
        http_status=503,
        progress=halfway,
    )
    store.requeue(
        second, code="quota_wait", message="no room", http_status=None, progress=Progress()
    )
    store.fail(third, code="domain_taken", message="taken", http_status=400, progress=Progress())
    assert_exact(store)
    assert store.cancel(ids[2])
    assert store.retry(signup)
    assert_exact(store)
    clock.advance(10)
    assert store.requeue_due() == 1  # the parked job's backoff is over
    cancelled = store.cancel_matching(JobFilter(batch_id="b1", status=JobStatus.queued))
    assert len(cancelled) == 7  # the parked one too, handed back
    assert_exact(store)
    summary = store.batch_summary("b1")
    assert (summary.counts["cancelled"], summary.counts["queued"], summary.total) == (8, 0, 8)
    assert summary.done
    assert summary.batch is not None
    assert (summary.batch.name, summary.batch.source) == ("signups.csv", "import")


def test_a_batch_summary_counts_failures_by_code_from_the_counts(store: JobStore) -> None:
    ids = list(
        store.enqueue_many(
            [NewJob(None, provision(f"f{n}.example.com")) for n in range(5)], batch="b2"
        ).created.values()
    )
    for n, job_id in enumerate(ids[:4]):
        assert job_id in store.admit({job_id: {}})
        claim = store.claim(job_id, lease_seconds=30)
        assert claim is not None
        code = "domain_taken" if n < 3 else "validation_error"
        store.fail(claim, code=code, message=code, http_status=400, progress=Progress())
    summary = store.batch_summary("b2", max_failures=2)
    assert summary.failures_by_code == {"domain_taken": 3, "validation_error": 1}
    assert [job.id for job in summary.failures] == sorted(ids[:4])[:2]  # one time: by id
    assert summary.truncated
    assert not summary.done
    assert store.batch_counts(["b2"])["b2"]["queued"] == 1


def test_the_quota_report_and_the_scheduler_read_the_counts(
    store: JobStore, clock: FakeClock
) -> None:
    store.enqueue_many(
        [NewJob(None, provision(f"a{n}.example.com"), Priority.bulk) for n in range(3)],
        batch="older",
    )
    clock.advance(1)
    store.enqueue_many(
        [NewJob(None, provision(f"b{n}.example.com"), Priority.bulk) for n in range(2)],
        batch="newer",
    )
    store.enqueue(provision("signup.example.com"))
    assert store.waiting_by_priority(["default"]) == {"interactive": 1, "bulk": 5}
    assert store.waiting_by_priority(["nobody"]) == {"interactive": 0, "bulk": 0}
    assert [b.id for b in store.pending_batches(["default"], Priority.bulk)] == ["older", "newer"]
    assert store.open_work(["default"], Priority.bulk, "older") == (3, 12)
    assert store.open_calls_by_batch(["default"], Priority.bulk) == {"older": 12, "newer": 8}
    [oldest] = store.ready_jobs(["default"], Priority.bulk, limit=1, batch_ids=["newer"])
    assert oldest.calls == 4
    assert store.unstarted_dispatched() == 0
    assert oldest.id in store.admit({oldest.id: {}})
    assert store.unstarted_dispatched() == 1
    assert store.waiting_by_priority(["default"])["bulk"] == 4
