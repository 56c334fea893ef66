"""The broker loses every message (FLUSHDB on its Redis db) and every job still completes.

The broker only carries job ids; the status table knows which jobs are queued and when their
message was published. The sweeper publishes again any dispatched job whose message went out
more than PROVISIONER_REDISPATCH_AFTER_SECONDS (3 s here) ago without the job starting. The
quota's counts live in the status table too, so the flush cannot reset them.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import redis

from testkit.clock import FakeClock
from testkit.databases import migrated_engine
from testkit.services import REDIS_URL
from testkit.waiting import wait_for
from testkit.workers import Stack, assert_all_succeeded, assert_provisioned_once, provision_request
from worker.app import QUEUE, CeleryDispatcher, create_app
from worker.dispatch import PRIORITIES
from worker.jobs.states import JobStatus, Priority
from worker.jobs.store import JobStore
from worker.settings import Settings
from worker.sweeper import LostMessages, sweep_once

#: Between the queue's name and a priority in the name of that priority's list (kombu's Redis
#: transport: ``provisioner`` holds priority 0, ``provisioner\x06\x163`` priority 3...).
SEP = "\x06\x16"


def queued_messages() -> int:
    """The queue's messages, over every priority's list (``worker.app.PRIORITIES``)."""
    with contextlib.closing(redis.Redis.from_url(REDIS_URL)) as client:
        return sum(int(client.llen(key)) for key in client.keys(f"{QUEUE}*"))


def test_jobs_survive_a_flushed_broker(stack: Stack, flush_broker: Callable[[], int]) -> None:
    stack.sandbox.configure(latency_ms=100)
    # 1. Messages published (by a scheduler) while no worker runs, then lost before any worker
    # sees them.
    early = stack.submit_sites(f"early{n}.example.com" for n in range(8))
    assert sorted(stack.schedule()) == sorted(early)
    assert queued_messages() == len(early)
    flush_broker()
    assert queued_messages() == 0

    worker = stack.start_worker(concurrency=2)
    # 2. Messages lost while a worker is busy: some jobs done, some running, some still queued.
    late = stack.submit_sites(f"late{n}.example.com" for n in range(16))
    wait_for(
        lambda: stack.status_counts(late)[JobStatus.succeeded] >= 2,
        timeout=30,
        describe=lambda: (
            f"the first late jobs to finish; {stack.status_counts(late)}\n{stack.logs()}"
        ),
    )
    assert stack.status_counts(late)[JobStatus.queued] > 0, "test too slow to lose queued jobs"
    flush_broker()

    jobs = stack.wait_done(early + late, timeout=60)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)
    # The early jobs ran only because the sweeper published them again.
    assert all(job.dispatch_count >= 2 for job in jobs if job.id in early)
    assert worker.alive()


def waiting_by_priority(client: redis.Redis) -> dict[int, list[str]]:
    """The job ids of the queue's messages by priority list, each in the order workers take
    them (kombu LPUSHes, the workers BRPOP)."""
    waiting: dict[int, list[str]] = {}
    for key in sorted(client.keys(f"{QUEUE}*")):
        name = key.decode()
        priority = int(name.removeprefix(QUEUE).removeprefix(SEP) or 0)
        messages = [json.loads(m) for m in reversed(client.lrange(key, 0, -1))]
        waiting[priority] = [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages]
    return waiting


def test_a_lost_signup_message_is_published_again_into_its_list(
    redis_url: str, tmp_path: Path
) -> None:
    """Signups' messages wait in a list of their own that every worker empties first: a worker
    takes a signup's message ahead of older bulk ones and dies with it. The sweeper publishes the
    signup's message again, into the signups' list, and no bulk message twice."""
    clock = FakeClock()
    database_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(migrated_engine(database_url), clock=clock)
    settings = Settings(broker_url=redis_url, database_url=database_url)
    dispatcher = CeleryDispatcher(create_app(settings))
    bulk = []
    for n in range(3):
        request = provision_request(f"bulk{n}.example.com")
        bulk.append(store.enqueue(request, priority=Priority.bulk).job.id)
    assert store.admit({job_id: {} for job_id in bulk}) == dict.fromkeys(bulk, False)
    dispatcher.publish(bulk, bulk=True)
    clock.advance(1)
    signup = store.enqueue(provision_request("signup.example.com")).job.id
    assert signup in store.admit({signup: {}})
    dispatcher.publish([signup])
    signups, background = PRIORITIES[False, False], PRIORITIES[True, False]
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        assert waiting_by_priority(client) == {signups: [signup], background: bulk}
        assert client.rpop(f"{QUEUE}{SEP}{signups}")  # taken, by a worker that then dies
        clock.advance(settings.redispatch_after_seconds + 1)
        lost = LostMessages()
        for _ in range(2):
            sweep_once(store, dispatcher, settings, lost)
        assert waiting_by_priority(client) == {signups: [signup], background: bulk}


def test_messages_lost_with_the_broker_go_back_into_their_lists(
    redis_url: str, flush_broker: Callable[[], int], tmp_path: Path
) -> None:
    """After a flush, each job's message goes back into the list the scheduler put it in: a
    bulk job's behind the signups, a job that ran before ahead of its class."""
    clock = FakeClock()
    database_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(migrated_engine(database_url), clock=clock)
    settings = Settings(broker_url=redis_url, database_url=database_url)
    dispatcher = CeleryDispatcher(create_app(settings))
    bulk = store.enqueue(provision_request("bulk.example.com"), priority=Priority.bulk).job.id
    signup = store.enqueue(provision_request("signup.example.com")).job.id
    resumed = store.enqueue(provision_request("resumed.example.com")).job.id
    claim = store.claim(resumed, lease_seconds=1)  # its worker died
    assert claim is not None
    clock.advance(2)
    assert store.requeue_due() == 1
    admitted = store.admit({bulk: {}, signup: {}, resumed: {}})
    assert admitted == {bulk: False, signup: False, resumed: True}
    dispatcher.publish([bulk], bulk=True)
    dispatcher.publish([signup])
    dispatcher.publish([resumed], first=True)
    lists = {PRIORITIES[True, False]: [bulk], PRIORITIES[False, False]: [signup]}
    lists[PRIORITIES[False, True]] = [resumed]
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        assert waiting_by_priority(client) == lists
        flush_broker()
        assert waiting_by_priority(client) == {}
        clock.advance(settings.redispatch_after_seconds + 1)
        lost = LostMessages()
        for _ in range(2):
            sweep_once(store, dispatcher, settings, lost)
        assert waiting_by_priority(client) == lists
