"""The status table's transitions: idempotent enqueue, exclusive claims, fencing, the sweeper."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from testkit.clock import FakeClock
from testkit.databases import migrated_engine
from testkit.fakes import RecordingDispatcher
from worker.dispatch import Lane
from worker.errors import IdempotencyConflictError
from worker.jobs.intake import derive_key
from worker.jobs.specs import GoalSpec, JobRequest, Progress, SiteRecord
from worker.jobs.states import JobStatus, Operation, Priority
from worker.jobs.store import JobStore
from worker.jobs.table import LeaseLostError
from worker.settings import Settings
from worker.sweeper import PUBLISH_SLACK_SECONDS, LostMessages, sweep_once


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'jobs.db'}"), clock=clock)


def provision(domain: str = "shop.example.com") -> JobRequest:
    return JobRequest(
        operation=Operation.provision_site,
        domain=domain,
        goals=(GoalSpec(goal_type="event", event_name="Signup"),),
        shared_links=("WordPress",),
    )


def test_enqueue_same_key_returns_existing_job(store: JobStore) -> None:
    first = store.enqueue(provision(), key="evt_1")
    second = store.enqueue(provision(), key="evt_1")
    assert first.created
    assert not second.created
    assert second.job.id == first.job.id


def test_enqueue_same_key_different_request_is_rejected(store: JobStore) -> None:
    store.enqueue(provision("a.example.com"), key="evt_1")
    with pytest.raises(IdempotencyConflictError, match="evt_1"):
        store.enqueue(provision("b.example.com"), key="evt_1")


def test_derived_key_is_stable_and_request_specific() -> None:
    assert derive_key(provision()) == derive_key(provision())
    assert derive_key(provision("a.example.com")) != derive_key(provision("b.example.com"))


def test_concurrent_enqueues_of_one_key_make_one_job(store: JobStore) -> None:
    results = []
    barrier = threading.Barrier(8)

    def enqueue() -> None:
        barrier.wait()
        results.append(store.enqueue(provision(), key="evt_race"))

    threads = [threading.Thread(target=enqueue) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.created for r in results) == 1
    assert len({r.job.id for r in results}) == 1


def test_only_one_claim_wins(store: JobStore) -> None:
    job = store.enqueue(provision()).job
    first = store.claim(job.id, lease_seconds=60)
    second = store.claim(job.id, lease_seconds=60)
    assert first is not None
    assert second is None


def test_expired_lease_is_taken_over_and_old_holder_is_fenced(
    store: JobStore, clock: FakeClock
) -> None:
    job = store.enqueue(provision()).job
    old = store.claim(job.id, lease_seconds=10)
    assert old is not None
    clock.advance(11)
    new = store.claim(job.id, lease_seconds=10)
    assert new is not None
    assert new.attempts == 2
    with pytest.raises(LeaseLostError):
        store.checkpoint(
            old, Progress(site=SiteRecord(domain="stale", timezone="UTC")), lease_seconds=10
        )
    store.succeed(new, Progress(site=SiteRecord(domain="shop.example.com", timezone="UTC")))
    finished = store.get(job.id)
    assert finished is not None
    assert finished.status is JobStatus.succeeded
    assert finished.progress.site == SiteRecord(domain="shop.example.com", timezone="UTC")


def test_renewed_lease_keeps_the_job_and_a_stale_holder_cannot_renew(
    store: JobStore, clock: FakeClock
) -> None:
    job = store.enqueue(provision()).job
    claim = store.claim(job.id, lease_seconds=10)
    assert claim is not None
    clock.advance(8)
    store.renew(claim, lease_seconds=10)
    clock.advance(8)  # 16 s after the claim, 8 s after the renewal
    assert store.claim(job.id, lease_seconds=10) is None
    clock.advance(3)
    assert store.claim(job.id, lease_seconds=10) is not None
    with pytest.raises(LeaseLostError):
        store.renew(claim, lease_seconds=10)


def test_parked_job_is_claimable_only_when_due(store: JobStore, clock: FakeClock) -> None:
    job = store.enqueue(provision()).job
    claim = store.claim(job.id, lease_seconds=60)
    assert claim is not None
    store.park(
        claim,
        until=clock.now + timedelta(seconds=30),
        code="server_error",
        message="boom",
        http_status=503,
        progress=Progress(),
    )
    assert store.claim(job.id, lease_seconds=60) is None
    clock.advance(31)
    assert store.claim(job.id, lease_seconds=60) is not None


def test_a_job_handed_back_for_quota_spends_no_attempt_and_waits_for_the_scheduler(
    store: JobStore, clock: FakeClock
) -> None:
    job = store.enqueue(provision()).job
    assert job.id in store.admit({job.id: {"burst:1": 4}})
    claim = store.claim(job.id, lease_seconds=60)
    assert claim is not None
    assert claim.permits == {"burst:1": 4}
    progress = Progress(site=SiteRecord(domain="shop.example.com", timezone="UTC"))
    store.requeue(claim, code="quota_wait", message="full", http_status=None, progress=progress)
    back = store.get(job.id)
    assert back is not None
    assert (back.status, back.attempts, back.dispatched_at, back.permits) == (
        JobStatus.queued,
        0,
        None,
        None,
    )
    assert back.progress == progress  # it resumes at its checkpoint
    assert [j.id for j in store.ready_jobs(["default"], Priority.interactive, limit=5)] == [job.id]


def settings(**overrides: float) -> Settings:
    return Settings(redispatch_after_seconds=60, **overrides)  # type: ignore[arg-type]


def test_the_sweeper_leaves_undispatched_jobs_to_the_scheduler(
    store: JobStore, clock: FakeClock
) -> None:
    dispatcher = RecordingDispatcher()
    store.enqueue(provision())
    clock.advance(3600)
    lost = LostMessages()
    for _ in range(2):
        sweep_once(store, dispatcher, settings(), lost)
    assert dispatcher.published == []


def test_sweeper_republishes_a_lost_message_with_growing_waits(
    store: JobStore, clock: FakeClock
) -> None:
    dispatcher = RecordingDispatcher()
    job = store.enqueue(provision()).job
    assert job.id in store.admit({job.id: {"burst:1": 4}})
    lost = LostMessages()
    clock.advance(61)
    sweep_once(store, dispatcher, settings(), lost)
    assert dispatcher.published == []  # missing once: maybe on its way to a worker
    sweep_once(store, dispatcher, settings(), lost)
    assert dispatcher.published == [job.id]  # missing twice in a row: lost
    clock.advance(61)  # the second re-publish waits twice as long
    sweep_once(store, dispatcher, settings(), lost)
    sweep_once(store, dispatcher, settings(), lost)
    assert dispatcher.published == [job.id]
    clock.advance(60)
    sweep_once(store, dispatcher, settings(), lost)
    sweep_once(store, dispatcher, settings(), lost)
    assert dispatcher.published == [job.id, job.id]
    still = store.get(job.id)
    assert still is not None
    assert still.permits == {"burst:1": 4}  # re-published with the permits it holds


def test_only_jobs_the_broker_has_no_message_for_are_published_again(
    store: JobStore, clock: FakeClock
) -> None:
    jobs = []
    for n in range(5):
        job = store.enqueue(provision(f"q{n}.example.com")).job
        assert job.id in store.admit({job.id: {}})
        jobs.append(job.id)
        clock.advance(1)
    clock.advance(60)
    waiting = RecordingDispatcher(waiting=5)  # every message still in the queue: slow workers
    lost = LostMessages()
    for _ in range(2):
        sweep_once(store, waiting, settings(), lost)
    assert waiting.published == []
    flushed = RecordingDispatcher(waiting=2)  # three messages gone
    for _ in range(2):
        sweep_once(store, flushed, settings(), lost)
    assert flushed.published == jobs[:3]  # the oldest: a FIFO queue hands those out first


def test_lost_messages_are_found_behind_fresh_ones(store: JobStore, clock: FakeClock) -> None:
    """Messages lost from the head of the queue while fresh ones keep arriving behind them: the
    lost are the oldest dispatched jobs, however many fresh messages wait."""
    lost = []
    for n in range(3):
        job = store.enqueue(provision(f"lost{n}.example.com")).job
        assert job.id in store.admit({job.id: {}})
        lost.append(job.id)
    clock.advance(61)
    for n in range(5):  # dispatched a moment ago; their messages are in the queue
        job = store.enqueue(provision(f"fresh{n}.example.com")).job
        assert job.id in store.admit({job.id: {}})
    clock.advance(PUBLISH_SLACK_SECONDS)  # their messages are surely in the broker by now
    dispatcher = RecordingDispatcher(waiting=5)
    lost_messages = LostMessages()
    for _ in range(2):
        sweep_once(store, dispatcher, settings(), lost_messages)
    assert sorted(dispatcher.published) == sorted(lost)


def test_a_message_on_its_way_to_a_worker_is_not_published_again(
    store: JobStore, clock: FakeClock
) -> None:
    """Taken from the queue and not yet claimed, a job's message is in neither place for a
    moment: at each sweep another job is caught so, and none of them is lost."""
    jobs = []
    for n in range(3):
        job = store.enqueue(provision(f"busy{n}.example.com")).job
        assert job.id in store.admit({job.id: {}})
        jobs.append(job.id)
        clock.advance(1)
    clock.advance(60)  # all due, were their messages lost
    lost = LostMessages()
    dispatcher = RecordingDispatcher(waiting=2)  # the oldest's message is with a worker
    sweep_once(store, dispatcher, settings(), lost)
    assert store.claim(jobs[0], lease_seconds=10) is not None  # and it starts
    dispatcher.waiting = 1  # now the next one is on its way
    sweep_once(store, dispatcher, settings(), lost)
    assert dispatcher.published == []


def test_a_job_dispatched_while_the_queue_is_read_makes_no_waiting_message_look_lost(
    store: JobStore, clock: FakeClock
) -> None:
    """Another worker's scheduler dispatches a job between the sweeper's read of the queue and
    its count of the unstarted: that job's message is not yet in the count the broker gave, and
    must not make the oldest waiting job (whose message is still queued) look lost."""
    for n in range(3):
        job = store.enqueue(provision(f"slow{n}.example.com")).job
        assert job.id in store.admit({job.id: {}})
    clock.advance(61)  # long enough to be published again, were their messages lost

    class DispatchingMeanwhile(RecordingDispatcher):
        reads = 0

        def queued_messages(self) -> dict[Lane, int]:
            count = super().queued_messages()  # the three still wait in the queue
            self.reads += 1
            meanwhile = store.enqueue(provision(f"meanwhile{self.reads}.example.com")).job
            assert meanwhile.id in store.admit({meanwhile.id: {}})
            return count

    dispatcher = DispatchingMeanwhile(waiting=3)
    lost = LostMessages()
    for _ in range(2):
        sweep_once(store, dispatcher, settings(), lost)
    assert dispatcher.published == []


def test_the_sweeper_hands_expired_leases_and_due_waits_back_to_the_scheduler(
    store: JobStore, clock: FakeClock
) -> None:
    dispatcher = RecordingDispatcher()
    crashed = store.enqueue(provision("a.example.com")).job
    parked = store.enqueue(provision("b.example.com")).job
    for job in (crashed, parked):
        assert job.id in store.admit({job.id: {"burst:1": 4}})
    assert store.claim(crashed.id, lease_seconds=10) is not None
    claim = store.claim(parked.id, lease_seconds=10)
    assert claim is not None
    store.park(
        claim,
        until=clock.now + timedelta(seconds=20),
        code="server_error",
        message="x",
        http_status=500,
        progress=Progress(),
    )

    def handed_back() -> list[str]:
        jobs = store.ready_jobs(["default"], Priority.interactive, limit=10)
        return sorted(j.id for j in jobs)

    clock.advance(11)
    assert sweep_once(store, dispatcher, settings(), LostMessages()).requeued == 1
    assert handed_back() == [crashed.id]
    clock.advance(10)
    assert sweep_once(store, dispatcher, settings(), LostMessages()).requeued == 1
    assert handed_back() == sorted([crashed.id, parked.id])
    assert dispatcher.published == []  # the scheduler dispatches them, within the quota
    again = store.get(crashed.id)
    assert again is not None
    assert (again.status, again.lease_token, again.permits) == (JobStatus.queued, None, None)


def test_admission_takes_each_job_once(store: JobStore) -> None:
    job = store.enqueue(provision()).job
    assert job.id in store.admit({job.id: {"burst:1": 4}})
    assert job.id not in store.admit({job.id: {"burst:1": 4}})
    assert store.ready_jobs(["default"], Priority.interactive, limit=5) == []


def test_candidates_are_per_class_per_account_and_oldest_first(
    store: JobStore, clock: FakeClock
) -> None:
    bulk = []
    for n in range(3):
        request = provision(f"b{n}.example.com")
        bulk.append(store.enqueue(request, batch="big", priority=Priority.bulk).job)
        clock.advance(1)
    interactive = store.enqueue(provision("new.example.com")).job
    other = store.enqueue(provision("x.example.com").model_copy(update={"account": "b"})).job
    assert [j.id for j in store.ready_jobs(["default"], Priority.interactive, limit=9)] == [
        interactive.id
    ]
    assert [j.id for j in store.ready_jobs(["b"], Priority.interactive, limit=9)] == [other.id]
    assert [
        j.id for j in store.ready_jobs(["default"], Priority.bulk, limit=2, batch_ids=["big"])
    ] == [bulk[0].id, bulk[1].id]
    assert [b.id for b in store.pending_batches(["default"], Priority.bulk)] == ["big"]
    assert store.waiting_by_priority(["default"]) == {"interactive": 1, "bulk": 3}
