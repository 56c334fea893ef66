"""Wake-ups: a producer's enqueue wakes a sleeping scheduler, in this process or through the
broker's Redis; the poll is far longer than the waits here, so only the wake-up explains it."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.events import parse_event
from testkit.databases import migrated_engine
from testkit.fakes import RecordingDispatcher
from testkit.waiting import wait_for
from worker.jobs.store import JobStore
from worker.runtime import make_scheduler
from worker.settings import Settings
from worker.sweeper import SweeperThread
from worker.wakeups import Wakeup, announcer


def test_a_published_wake_up_wakes_every_listener(redis_url: str) -> None:
    first, second = Wakeup(), Wakeup()
    for wakeup in (first, second):
        wakeup.listen(redis_url)
    announce = announcer(redis_url)
    assert announce is not None
    try:
        # The subscriptions start in their threads: announce until both have heard one.
        wait_for(
            lambda: (announce(), first.wait(0.2) and second.wait(0.2))[1],
            timeout=10,
            describe="both listeners woken",
        )
    finally:
        first.stop()
        second.stop()
    assert announcer("amqp://guest@127.0.0.1//") is None  # no channel: the poll is the net


def test_an_enqueue_wakes_the_sleeping_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store = JobStore(migrated_engine(url))
    looked: list[int] = []  # each time the loop asks whether jobs wait for admission
    read = store.ready_waiting
    monkeypatch.setattr(store, "ready_waiting", lambda: looked.append(read()) or looked[-1])
    settings = Settings(database_url=url, hourly_limit=10_000, burst_limit=10_000)
    dispatcher = RecordingDispatcher()
    wakeup = Wakeup()
    store.announce = wakeup.set
    sweeper = SweeperThread(
        store, make_scheduler(settings, store, dispatcher), settings, wakeup, poll=3600
    )
    sweeper.start()
    try:
        wait_for(lambda: looked, timeout=5, describe="the first look, finding nothing")
        assert looked == [0]
        job = store.enqueue(parse_event({"domain": "woken.example.com"}).request).job
        wait_for(lambda: job.id in dispatcher.published, timeout=10, describe="the job dispatched")
    finally:
        sweeper.stop()
        sweeper.join(timeout=5)
