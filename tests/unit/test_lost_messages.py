"""Lost messages are found per FIFO lane of the broker, on SQLite and PostgreSQL: on Redis (and
in the embedded queue) each priority is a lane of its own and the workers empty the signups'
first, so the messages missing from a lane are those of its oldest jobs, not the oldest jobs
overall; each is published again into the lane it was lost from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.clock import FakeClock
from testkit.databases import migrated_engine
from testkit.fakes import RecordingDispatcher
from worker.dispatch import PRIORITIES, Dispatcher
from worker.embedded import EmbeddedWorkers
from worker.jobs.specs import JobRequest, Progress
from worker.jobs.states import Operation, Priority
from worker.jobs.store import JobStore
from worker.settings import Settings
from worker.sweeper import REDISPATCH_CHUNK, LostMessages, missing_by_lane, sweep_once


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[JobStore]:
    engine = migrated_engine(database_url)
    yield JobStore(engine, clock=clock)
    engine.dispose()


def provision(domain: str) -> JobRequest:
    return JobRequest(operation=Operation.provision_site, domain=domain)


def settings() -> Settings:
    return Settings(redispatch_after_seconds=60)


def sweep_twice(store: JobStore, dispatcher: Dispatcher) -> None:
    """Two sweeps: a message lost for good looks so at two in a row (``LostMessages``)."""
    lost = LostMessages()
    for _ in range(2):
        sweep_once(store, dispatcher, settings(), lost)


def waiting_messages(workers: EmbeddedWorkers) -> list[tuple[int, str]]:
    """The embedded queue's messages as (priority, the job's domain), in the order workers take
    them."""
    waiting = []
    for priority, _, job_id in sorted(workers._queue.queue):
        job = workers.store.get(job_id or "")
        assert job is not None
        waiting.append((priority, job.spec.domain))
    return waiting


def test_a_lost_signup_is_published_again_not_an_older_bulk_job(
    store: JobStore, clock: FakeClock
) -> None:
    """Each priority is a FIFO lane of its own and a signup's goes ahead of bulk ones: a worker
    takes the signup's message before the older bulk messages, and dies with it. The message
    missing is the signup's, not the oldest bulk job's."""
    workers = EmbeddedWorkers(settings(), store)  # not started: its queue only
    bulk = []
    for n in range(3):
        job = store.enqueue(provision(f"bulk{n}.example.com"), priority=Priority.bulk).job
        assert job.id in store.admit({job.id: {}})
        bulk.append(job.id)
    workers.publish(bulk, bulk=True)
    clock.advance(1)
    signup = store.enqueue(provision("signup.example.com")).job.id
    assert signup in store.admit({signup: {}})
    workers.publish([signup])
    assert workers._queue.get()[2] == signup  # taken first, by a worker that then dies
    clock.advance(61)
    sweep_twice(store, workers)
    assert waiting_messages(workers) == [
        (PRIORITIES[False, False], "signup.example.com"),
        *((PRIORITIES[True, False], f"bulk{n}.example.com") for n in range(3)),
    ]


def test_of_jobs_dispatched_together_the_first_published_are_the_ones_a_dead_worker_took(
    store: JobStore, clock: FakeClock
) -> None:
    """One tick dispatches many jobs at once, and a worker takes the front of the lane: the
    sweeper must know which of them went first, whatever order the rows were written in."""
    workers = EmbeddedWorkers(settings(), store)  # not started: its queue only
    jobs = [store.enqueue(provision(f"signup{n}.example.com")).job.id for n in range(6)]
    published = jobs[::-1]  # the scheduler's order, not the table's
    assert set(store.admit({job_id: {} for job_id in published})) == set(jobs)
    workers.publish(published)
    taken = [workers._queue.get()[2] for _ in range(2)]  # by a worker that then dies
    assert taken == published[:2]
    clock.advance(61)
    sweep_twice(store, workers)
    assert waiting_messages(workers) == [
        (PRIORITIES[False, False], f"signup{n}.example.com") for n in (3, 2, 1, 0, 5, 4)
    ]


def test_messages_published_again_go_to_the_lane_of_their_job(
    store: JobStore, clock: FakeClock
) -> None:
    """Every message lost (a flushed broker): each goes back into the lane the scheduler put it
    in, a bulk job's behind the signups and one that ran before ahead of its class, so that
    each lane's count stays exact."""
    workers = EmbeddedWorkers(settings(), store)  # not started: its queue only
    resumed = store.enqueue(provision("resumed.example.com")).job.id
    assert resumed in store.admit({resumed: {}})
    claim = store.claim(resumed, lease_seconds=10)
    assert claim is not None
    progress = Progress()
    store.requeue(claim, code="quota_wait", message="full", http_status=None, progress=progress)
    signup = store.enqueue(provision("signup.example.com")).job.id
    bulk = store.enqueue(provision("bulk.example.com"), priority=Priority.bulk).job.id
    resumed_bulk = store.enqueue(provision("again.example.com"), priority=Priority.bulk).job.id
    assert store.claim(resumed_bulk, lease_seconds=10) is not None
    clock.advance(11)
    assert store.requeue_due() == 1  # its worker died
    for job_id in (resumed, signup, bulk, resumed_bulk):
        assert job_id in store.admit({job_id: {}})
    # Long enough for the resumed job's second message too (each waits twice the one before).
    clock.advance(121)
    sweep_twice(store, workers)
    assert waiting_messages(workers) == [
        (PRIORITIES[False, True], "resumed.example.com"),
        (PRIORITIES[False, False], "signup.example.com"),
        (PRIORITIES[True, True], "again.example.com"),
        (PRIORITIES[True, False], "bulk.example.com"),
    ]


def test_with_one_queue_for_every_priority_the_oldest_messages_are_the_missing_ones(
    store: JobStore, clock: FakeClock
) -> None:
    """RabbitMQ ignores priorities: its one queue hands out the oldest message first, whatever
    its class, so a lost message there is the oldest dispatched job's."""
    bulk = store.enqueue(provision("bulk.example.com"), priority=Priority.bulk).job.id
    assert bulk in store.admit({bulk: {}})
    clock.advance(1)
    signup = store.enqueue(provision("signup.example.com")).job.id
    assert signup in store.admit({signup: {}})
    clock.advance(61)
    dispatcher = RecordingDispatcher(waiting=1)  # one queue; the bulk job's message was taken
    sweep_twice(store, dispatcher)
    assert dispatcher.published == [bulk]


SIGNUP, BULK, RESUMED = (False, False), (True, False), (False, True)


def test_a_lane_holding_more_messages_than_its_jobs_hides_no_loss_in_another() -> None:
    # A stale extra message in the signups' list (say, one published before an upgrade) must
    # not cover for a bulk message lost from its own list.
    queued = {PRIORITIES[SIGNUP]: 3, PRIORITIES[BULK]: 1, PRIORITIES[RESUMED]: 0, 6: 0}
    assert missing_by_lane({SIGNUP: 2, BULK: 2}, queued) == {frozenset({BULK}): 1}


def test_with_the_queue_gone_every_dispatched_job_is_missing_in_its_own_lane() -> None:
    assert missing_by_lane({SIGNUP: 2, BULK: 1}, {}) == {
        frozenset({SIGNUP}): 2,
        frozenset({BULK}): 1,
    }


def test_one_sweep_publishes_at_most_a_chunk_in_all_signups_first() -> None:
    found = missing_by_lane({BULK: REDISPATCH_CHUNK, SIGNUP: 3, RESUMED: 1}, {})
    assert found == {
        frozenset({RESUMED}): 1,
        frozenset({SIGNUP}): 3,
        frozenset({BULK}): REDISPATCH_CHUNK - 4,
    }
    assert sum(missing_by_lane({BULK: 400, SIGNUP: 400}, {None: 0}).values()) == REDISPATCH_CHUNK
