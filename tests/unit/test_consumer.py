"""``provision consume``: a Redis Stream consumer group that never loses or duplicates a signup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from producers.consumer import StreamConsumer, default_consumer_name
from testkit.databases import migrated_engine
from testkit.events import event
from testkit.sandbox_process import REPO_ROOT
from testkit.waiting import wait_for
from worker.jobs.models import ProvisioningJob
from worker.jobs.states import JobStatus, Priority
from worker.jobs.store import JobStore

STREAM = "signups"


def job_count(store: JobStore) -> int:
    with Session(store.engine) as session:
        return int(session.exec(select(func.count()).select_from(ProvisioningJob)).one())


def consumer(client: redis.Redis, store: JobStore, name: str = "c1", **kw: Any) -> StreamConsumer:
    return StreamConsumer(
        client,
        store,
        stream=STREAM,
        group="g",
        consumer=name,
        block_ms=10,
        **kw,
    )


def test_poison_entries_are_dead_lettered_and_acknowledged(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    c = consumer(client, store)
    c.ensure_group()
    client.xadd(STREAM, {"event": json.dumps(event(1))})
    client.xadd(STREAM, {"event": "{not json"})
    client.xadd(STREAM, {"event": json.dumps(event(2, timezone="Mars/Olympus"))})
    client.xadd(STREAM, {"other": "field"})
    client.xadd(STREAM, {"event": json.dumps(event(1))})  # a redelivered duplicate
    client.xadd(STREAM, {"event": json.dumps(event(1, domain="x.example.com"))})  # key reused
    assert c.step() == 6
    assert (c.stats.queued, c.stats.duplicate, c.stats.dead) == (1, 1, 4)
    dead = [fields for _, fields in client.xrange(f"{STREAM}:dead")]
    assert [d["field"] for d in dead] == ["", "timezone", "", "id"]
    assert "not valid JSON" in dead[0]["reason"]
    assert "Mars/Olympus" in dead[1]["reason"]
    assert client.xpending(STREAM, "g")["pending"] == 0
    assert job_count(store) == 1


def test_stream_jobs_are_interactive_unless_the_event_asks_for_bulk(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    c = consumer(client, store)
    c.ensure_group()
    client.xadd(STREAM, {"event": json.dumps(event(1))})
    client.xadd(STREAM, {"event": json.dumps(event(2, priority="bulk"))})
    assert c.step() == 2
    jobs = [store.get_by_key(key) for key in ("evt_1", "evt_2")]
    assert [(job.status, job.dispatched_at, job.priority) if job else None for job in jobs] == [
        (JobStatus.queued, None, Priority.interactive),  # left to the scheduler
        (JobStatus.queued, None, Priority.bulk),
    ]


def test_an_event_for_an_unknown_account_is_dead_lettered_naming_the_field(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    c = consumer(client, store, accounts=["default"])
    c.ensure_group()
    client.xadd(STREAM, {"event": json.dumps(event(1, account="nobody"))})
    client.xadd(STREAM, {"event": json.dumps(event(2, account="default"))})
    client.xadd(STREAM, {"event": json.dumps(event(3, priority="urgent"))})
    assert c.step() == 3
    assert (c.stats.queued, c.stats.dead) == (1, 2)
    dead = [fields for _, fields in client.xrange(f"{STREAM}:dead")]
    assert [(json.loads(d["event"])["id"], d["field"]) for d in dead] == [
        ("evt_1", "account"),
        ("evt_3", "priority"),
    ]
    assert "nobody" in dead[0]["reason"]
    assert client.xpending(STREAM, "g")["pending"] == 0
    assert job_count(store) == 1
    assert store.find("evt_2") is not None


def test_pending_entries_are_processed_on_restart_and_stale_ones_claimed(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    first = consumer(client, store, "c1")
    first.ensure_group()
    for n in range(5):
        client.xadd(STREAM, {"event": json.dumps(event(n))})
    # c1 reads but dies before committing or acknowledging anything.
    client.xreadgroup("g", "c1", {STREAM: ">"}, count=3)
    client.xreadgroup("g", "c2", {STREAM: ">"}, count=2)  # c2 dies too and never comes back
    restarted = consumer(client, store, "c1", claim_idle_ms=0)
    restarted.recover()
    assert restarted.stats.queued == 5
    assert client.xpending(STREAM, "g")["pending"] == 0
    assert job_count(store) == 5


def test_consumer_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    database = f"sqlite:///{tmp_path / 'consume.db'}"
    store = JobStore(migrated_engine(database))
    total = 3000
    pipe = client.pipeline()
    for n in range(total):
        pipe.xadd(STREAM, {"event": json.dumps(event(n))})
    pipe.execute()
    env = {
        **os.environ,
        "PROVISIONER_DATABASE_URL": database,
        "PROVISIONER_BROKER_URL": redis_url,  # no worker runs; the consumer publishes nothing
        "PROVISIONER_STREAM_REDIS_URL": redis_url,
    }
    command = [
        sys.executable,
        "-m",
        "provision.cli",
        "consume",
        "--stream",
        STREAM,
        "--group",
        "g",
        "--consumer",
        "c1",
        "--count",
        "50",
    ]

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / "consume.log").open("ab")
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log, start_new_session=True
        )

    proc = start()
    try:
        wait_for(
            lambda: job_count(store) >= 200,
            timeout=30,
            describe="the consumer to enqueue some jobs",
        )
        os.killpg(proc.pid, signal.SIGKILL)  # mid-stream, likely mid-batch
        proc.wait(timeout=30)
        killed_at = job_count(store)
        assert killed_at < total
        proc = start()
        wait_for(
            lambda: (
                job_count(store) == total and client.xpending(STREAM, "g")["pending"] == 0
                if client.exists(STREAM)
                else False
            ),
            timeout=120,
            describe="every event to be enqueued and acknowledged",
        )
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    with Session(store.engine) as session:
        rows = session.exec(
            select(
                ProvisioningJob.idempotency_key,
                ProvisioningJob.status,
                ProvisioningJob.dispatched_at,
            )
        ).all()
    keys = [key for key, _, _ in rows]
    assert len(keys) == len(set(keys)) == total
    # Every job waits for the scheduler: the consumer wrote rows and published nothing.
    assert {(status, dispatched) for _, status, dispatched in rows} == {(JobStatus.queued, None)}
    assert set(keys) == {f"evt_{n}" for n in range(total)}
    assert client.xlen(f"{STREAM}:dead") == 0


def test_entries_that_crash_validation_or_the_insert_are_dead_lettered(
    redis_url: str, tmp_path: Path
) -> None:
    """Not only the expected errors: anything an entry makes parsing or the INSERT raise."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    c = consumer(client, store)
    c.ensure_group()
    client.xadd(STREAM, {"event": json.dumps(event(1))})
    client.xadd(STREAM, {"event": json.dumps({"type": [], "domain": "a.example.com"})})
    client.xadd(STREAM, {"event": '{"id": ' + "9" * 5000 + "}"})  # ValueError, not JSONDecodeError
    client.xadd(STREAM, {"event": "[" * 100_000})  # RecursionError
    client.xadd(STREAM, {"event": json.dumps(event(5, id="evt_\ud800"))})  # unencodable key
    client.xadd(STREAM, {"event": json.dumps(event(6))})
    assert c.step() == 6
    assert (c.stats.queued, c.stats.dead) == (2, 4)
    assert client.xpending(STREAM, "g")["pending"] == 0
    assert job_count(store) == 2
    reasons = [fields["reason"] for _, fields in client.xrange(f"{STREAM}:dead")]
    assert len(reasons) == 4
    assert "ValueError" in reasons[1]
    assert "RecursionError" in reasons[2]


class FailsOnKey(JobStore):
    """A store whose INSERT fails (as a driver does on bad data) whenever one key is in it."""

    def __init__(self, inner: JobStore, bad_key: str) -> None:
        super().__init__(inner.engine)
        self.bad_key = bad_key

    def enqueue_many(self, items, **options):  # type: ignore[no-untyped-def]
        if any(item.key == self.bad_key for item in items):
            raise UnicodeEncodeError("utf-8", self.bad_key, 0, 1, "surrogates not allowed")
        return super().enqueue_many(items, **options)


def test_a_failing_batch_insert_is_retried_row_by_row(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = FailsOnKey(JobStore(migrated_engine(f"sqlite:///{tmp_path / 'c.db'}")), "evt_2")
    c = consumer(client, store)
    c.ensure_group()
    for n in range(4):
        client.xadd(STREAM, {"event": json.dumps(event(n))})
    assert c.step() == 4
    assert (c.stats.queued, c.stats.dead) == (3, 1)
    dead = [fields for _, fields in client.xrange(f"{STREAM}:dead")]
    assert len(dead) == 1
    assert "UnicodeEncodeError" in dead[0]["reason"]
    assert json.loads(dead[0]["event"])["id"] == "evt_2"
    assert client.xpending(STREAM, "g")["pending"] == 0
    assert job_count(store) == 3


class DatabaseDown(JobStore):
    def enqueue_many(self, items, **options):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT", {}, Exception("connection refused"))


def test_a_database_outage_dead_letters_nothing_and_leaves_the_batch_pending(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = DatabaseDown(migrated_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    c = consumer(client, store)
    c.ensure_group()
    client.xadd(STREAM, {"event": json.dumps(event(1))})
    with pytest.raises(OperationalError):
        c.step()
    assert client.xlen(f"{STREAM}:dead") == 0
    assert client.xpending(STREAM, "g")["pending"] == 1


def test_a_running_consumer_claims_a_dead_consumers_entries_without_restarting(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    b = consumer(client, store, "b", claim_every_ms=0)  # claim_idle_ms stays 60 s
    b.ensure_group()
    for n in range(3):
        client.xadd(STREAM, {"event": json.dumps(event(n))})
    read = client.xreadgroup("g", "a", {STREAM: ">"})  # consumer "a" reads, then dies
    ids = [entry_id for entry_id, _ in read[0][1]]
    steps: list[int] = []
    original_step = b.step
    b.step = lambda: steps.append(1) or original_step()  # type: ignore[method-assign]
    thread = threading.Thread(target=b.run)
    thread.start()
    try:
        # b started while a's entries were fresh, so its start-up claim left them alone.
        wait_for(lambda: len(steps) >= 2, timeout=30, describe="b to be consuming")
        assert b.stats.queued == 0
        # a's entries now look idle for an hour: b must take them over while it runs.
        client.xclaim(STREAM, "g", "a", 0, ids, idle=3_600_000)
        wait_for(lambda: b.stats.queued == 3, timeout=30, describe="b to claim a's stale entries")
    finally:
        b.stop()
        thread.join(timeout=30)
    assert client.xpending(STREAM, "g")["pending"] == 0
    assert job_count(store) == 3


def test_the_default_consumer_name_survives_a_restart() -> None:
    assert default_consumer_name() == default_consumer_name() == socket.gethostname()
