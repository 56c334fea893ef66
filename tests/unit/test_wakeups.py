"""Wake-ups: a producer's enqueue wakes a sleeping scheduler, in this process, through the
broker's Redis or through the PostgreSQL status database (LISTEN/NOTIFY); the poll is far longer
than the waits here, so only the wake-up explains it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from producers.events import parse_event
from producers.importer import import_file, wait_for_batch
from testkit.databases import migrated_engine
from testkit.fakes import RecordingDispatcher
from testkit.waiting import wait_for
from worker.app import idle_poll
from worker.jobs.queries import BatchSummary
from worker.jobs.specs import Progress
from worker.jobs.store import JobStore
from worker.runtime import make_scheduler
from worker.settings import Settings
from worker.sweeper import SweeperThread
from worker.wakeups import (
    Announcer,
    PostgresTransport,
    RedisTransport,
    Transport,
    Wakeup,
    announcer,
    listening,
    transport_for,
    transport_of,
)

AMQP = "amqp://guest@127.0.0.1//"


def assert_every_listener_woken(transport: Transport) -> None:
    """Two listeners on ``transport`` are both woken by one announcement over it, and by
    nothing else once they listen."""
    first, second = Wakeup(), Wakeup()
    for wakeup in (first, second):
        wakeup.listen(transport)
    announce = announcer(transport)
    assert announce is not None
    try:
        wait_for(
            lambda: first.subscribed.is_set() and second.subscribed.is_set(),
            timeout=10,
            describe="both listeners subscribed",
        )
        # Subscribing wakes each once (what was announced before it went unheard): clear that,
        # so only the announcement below can wake them.
        assert first.wait(0)
        assert second.wait(0)
        assert not (first.wait(0.2))
        assert not (second.wait(0.2))
        announce()
        assert first.wait(10)
        assert second.wait(10)
    finally:
        first.stop()
        second.stop()


def test_a_published_wake_up_wakes_every_listener(redis_url: str) -> None:
    assert_every_listener_woken(RedisTransport(redis_url))
    assert announcer(transport_for(AMQP)) is None  # no channel: the poll is the net


def test_a_batch_waited_for_is_seen_done_when_a_worker_says_so(tmp_path: Path) -> None:
    """``import --wait`` and ``apply --wait`` read the batch again at a wake-up, not only at
    their poll."""
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'w.db'}"))
    signups = tmp_path / "signups.jsonl"
    signups.write_text('{"domain": "waited.example.com"}\n')
    summary = import_file(store, signups)
    wakeup = Wakeup()
    seen: list[BatchSummary] = []
    waiter = threading.Thread(
        target=lambda: wait_for_batch(
            store, summary.batch_id, poll_seconds=3600, on_progress=seen.append, wakeup=wakeup
        )
    )
    waiter.start()
    wait_for(lambda: seen, timeout=10, describe="the first read of the batch")
    claim = store.claim(store.batch(summary.batch_id)[0].id, lease_seconds=60)
    assert claim is not None
    store.succeed(claim, Progress())
    wakeup.set()  # what a worker's announcement does
    waiter.join(timeout=30)
    assert not waiter.is_alive(), "still waiting an hour for its next poll"
    assert seen[-1].done
    assert len(seen) == 2


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


def test_the_channel_is_chosen_by_configuration() -> None:
    pg = "postgresql+psycopg://postgres@127.0.0.1:5432/jobs"
    assert isinstance(transport_for("redis://127.0.0.1:6379/0", pg), RedisTransport)
    chosen = transport_for(AMQP, pg)
    assert isinstance(chosen, PostgresTransport)
    assert conninfo_to_dict(chosen.conninfo) == {  # libpq's form
        "host": "127.0.0.1",
        "port": "5432",
        "user": "postgres",
        "dbname": "jobs",
    }
    # No part given: libpq's defaults (PGHOST...), still a channel.
    assert isinstance(transport_for(AMQP, "postgresql+psycopg://"), PostgresTransport)
    assert isinstance(transport_for("redis://127.0.0.1:6379/0", pg, "postgres"), PostgresTransport)
    assert transport_for("redis://127.0.0.1:6379/0", pg, "none") is None
    assert transport_for(AMQP, "sqlite:///jobs.db") is None
    # Without a channel the scheduler looks at the busy rate; with one, at the idle poll.
    settings = Settings(broker_url=AMQP, database_url=pg, idle_poll_seconds=7)
    assert isinstance(transport_of(settings), PostgresTransport)
    assert idle_poll(settings) == 7
    alone = Settings(broker_url=AMQP, database_url="sqlite:///jobs.db", idle_poll_seconds=7)
    assert idle_poll(alone) == alone.schedule_interval_seconds


def test_a_channel_asked_for_that_cannot_be_had_is_one_warning_and_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An option only the engine knows: libpq would refuse the channel's connection string.
    odd = "postgresql+psycopg://postgres@127.0.0.1:5432/jobs?unknown_option=1"
    with caplog.at_level("WARNING", logger="worker.wakeups"):
        assert transport_for(AMQP, odd) is None  # auto: quietly the idle poll
        assert not caplog.records
        assert transport_for(AMQP, odd, "postgres") is None
        assert transport_for(AMQP, "sqlite:///jobs.db", "redis") is None
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "PROVISIONER_WAKEUPS=postgres",
        "PROVISIONER_WAKEUPS=redis",
    ]


def test_a_notify_on_the_status_database_wakes_every_listener(postgres_url: str) -> None:
    transport = transport_for(AMQP, postgres_url)
    assert isinstance(transport, PostgresTransport)
    assert_every_listener_woken(transport)


def listener_pids(postgres_url: str) -> set[int]:
    """Backends of the test's database waiting in LISTEN (the listeners' connections)."""
    import psycopg

    transport = transport_for(AMQP, postgres_url)
    assert isinstance(transport, PostgresTransport)
    with psycopg.connect(transport.conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        ).fetchall()
    return {int(pid) for (pid,) in rows}


def test_a_listener_whose_connection_is_lost_wakes_the_scheduler_and_listens_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    import worker.wakeups

    monkeypatch.setattr(worker.wakeups, "RESUBSCRIBE_SECONDS", 0.2)
    transport = transport_for(AMQP, postgres_url)
    assert isinstance(transport, PostgresTransport)
    wakeup = Wakeup()
    wakeup.listen(transport)
    try:
        wait_for(
            lambda: listener_pids(postgres_url) and wakeup.subscribed.is_set(),
            timeout=10,
            describe="a listener",
        )
        [lost] = listener_pids(postgres_url)
        wakeup.wait(0)  # the look once listening
        assert not wakeup.wait(0)
        with psycopg.connect(transport.conninfo, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (lost,))
        # The loss wakes the scheduler (a wake-up may have been missed): it looks meanwhile.
        assert wakeup.wait(10)
        wait_for(
            lambda: listener_pids(postgres_url) - {lost} and wakeup.subscribed.is_set(),
            timeout=10,
            describe="listening again on a new connection",
        )
        wakeup.wait(0)  # forget the wake-ups of the retries
        Announcer(transport)()
        assert wakeup.wait(10)
    finally:
        wakeup.stop()


def test_an_enqueue_wakes_a_scheduler_listening_on_postgresql(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RabbitMQ as the broker, PostgreSQL as the status database: the producer's NOTIFY wakes
    a scheduler whose poll is an hour away."""
    settings = Settings(
        broker_url=AMQP, database_url=postgres_url, hourly_limit=10_000, burst_limit=10_000
    )
    store = JobStore(migrated_engine(postgres_url))
    store.announce = announcer(transport_of(settings)) or store.announce
    looked: list[int] = []  # each time the loop asks whether jobs wait for admission
    read = store.ready_waiting
    monkeypatch.setattr(store, "ready_waiting", lambda: looked.append(read()) or looked[-1])
    dispatcher = RecordingDispatcher()
    wakeup = listening(settings)
    sweeper = SweeperThread(
        store, make_scheduler(settings, store, dispatcher), settings, wakeup, poll=3600
    )
    sweeper.start()
    try:
        # The first look, and one more once listening (for work announced before that).
        wait_for(
            lambda: len(looked) >= 2 and wakeup.subscribed.is_set(),
            timeout=10,
            describe="the scheduler listening, having looked",
        )
        assert set(looked) == {0}
        job = store.enqueue(parse_event({"domain": "notified.example.com"}).request).job
        wait_for(lambda: job.id in dispatcher.published, timeout=10, describe="the job dispatched")
    finally:
        sweeper.stop()
        wakeup.stop()
        sweeper.join(timeout=5)
        store.engine.dispose()
