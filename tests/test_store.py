"""The status table's transitions: idempotent enqueue, exclusive claims, fencing, the sweeper."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from tests.databases import migrated_engine
from tests.fake_clock import FakeClock
from worker.errors import IdempotencyConflictError
from worker.models import GoalSpec, JobRequest, JobStatus, Operation, Progress, SiteRecord
from worker.settings import Settings
from worker.store import JobStore, LeaseLostError, derive_key
from worker.sweeper import sweep_once


class RecordingDispatcher:
    def __init__(self) -> None:
        self.published: list[str] = []

    def publish(self, job_ids: list[str]) -> None:  # type: ignore[override]
        self.published.extend(job_ids)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


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


def test_rate_limit_park_does_not_spend_an_attempt(store: JobStore, clock: FakeClock) -> None:
    job = store.enqueue(provision()).job
    claim = store.claim(job.id, lease_seconds=60)
    assert claim is not None
    store.park(
        claim,
        until=clock.now,
        code="rate_limited",
        message="slow down",
        http_status=429,
        progress=Progress(),
        refund_attempt=True,
    )
    parked = store.get(job.id)
    assert parked is not None
    assert parked.attempts == 0


def settings(**overrides: float) -> Settings:
    return Settings(undispatched_grace_seconds=5, redispatch_after_seconds=60, **overrides)  # type: ignore[arg-type]


def test_sweeper_publishes_a_job_its_producer_never_published(
    store: JobStore, clock: FakeClock
) -> None:
    dispatcher = RecordingDispatcher()
    job = store.enqueue(provision()).job
    sweep_once(store, dispatcher, settings())
    assert dispatcher.published == []  # still within the producer's grace
    clock.advance(6)
    sweep_once(store, dispatcher, settings())
    sweep_once(store, dispatcher, settings())
    assert dispatcher.published == [job.id]


def test_sweeper_republishes_a_lost_message_with_growing_waits(
    store: JobStore, clock: FakeClock
) -> None:
    dispatcher = RecordingDispatcher()
    job = store.enqueue(provision()).job
    store.mark_dispatched([job.id])
    clock.advance(61)
    sweep_once(store, dispatcher, settings())
    assert dispatcher.published == [job.id]
    clock.advance(61)  # the second re-publish waits twice as long
    sweep_once(store, dispatcher, settings())
    assert dispatcher.published == [job.id]
    clock.advance(60)
    sweep_once(store, dispatcher, settings())
    assert dispatcher.published == [job.id, job.id]


def test_sweeper_redrives_expired_leases_and_due_waits(store: JobStore, clock: FakeClock) -> None:
    dispatcher = RecordingDispatcher()
    crashed = store.enqueue(provision("a.example.com")).job
    parked = store.enqueue(provision("b.example.com")).job
    store.mark_dispatched([crashed.id, parked.id])
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
    clock.advance(11)
    sweep_once(store, dispatcher, settings())
    assert dispatcher.published == [crashed.id]
    clock.advance(10)
    sweep_once(store, dispatcher, settings())
    assert sorted(dispatcher.published) == sorted([crashed.id, parked.id])
    again = store.get(crashed.id)
    assert again is not None
    assert again.status is JobStatus.queued


def test_a_backlog_waiting_out_its_backoff_never_starves_an_unpublished_job(
    store: JobStore, clock: FakeClock
) -> None:
    dispatcher = RecordingDispatcher()
    backlog = [store.enqueue(provision(f"b{n}.example.com")).job.id for n in range(30)]
    store.mark_dispatched(backlog)
    for _ in range(3):  # published three times: each now waits 4 x 60 s before the next
        clock.advance(60 * 2**_ + 1)
        assert sorted(store.take_for_dispatch(undispatched_grace=5, redispatch_after=60)) == sorted(
            backlog
        )
    orphan = store.enqueue(
        provision("orphan.example.com")
    ).job  # its producer died before publishing
    clock.advance(
        100
    )  # the backlog was published 100 s ago: past the base wait, inside its backoff
    taken = store.take_for_dispatch(undispatched_grace=5, redispatch_after=60, limit=10)
    assert taken == [orphan.id]
    sweep_once(store, dispatcher, settings())
    assert dispatcher.published == []
