"""The worker registry: a process whose beats stop has its jobs handed back (only while its claim
holds them), one that beats keeps them, a process taken for dead can no longer call or write, and
a job that ran before goes ahead of the waiting messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.events import parse_event
from testkit.databases import migrated_engine
from testkit.fakes import RecordingDispatcher
from worker import leases
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.jobs.table import LeaseLostError
from worker.leases import LeaseKeeper
from worker.registry import Heartbeat, Watcher
from worker.runtime import make_scheduler
from worker.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'r.db'}"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'r.db'}",
        heartbeat_timeout_seconds=3,
        hourly_limit=10_000,
        burst_limit=10_000,
    )


def enqueue(store: JobStore, name: str) -> str:
    return store.enqueue(parse_event({"domain": f"{name}.example.com"}).request).job.id


def test_a_silent_process_loses_its_jobs_and_a_beating_one_keeps_them(
    store: JobStore, settings: Settings
) -> None:
    clock = Clock()
    watcher = Watcher(store, store, settings, monotonic=clock)
    silent, beating = enqueue(store, "silent"), enqueue(store, "beating")
    for owner in ("host-a:1:x", "host-b:1:y"):
        store.register(owner, host=owner.split(":")[0], pid=1)
    assert store.claim(silent, lease_seconds=3600, owner="host-a:1:x") is not None
    assert store.claim(beating, lease_seconds=3600, owner="host-b:1:y") is not None

    assert watcher() == 0  # first sight of both: nothing is known to be silent yet
    assert watcher.due() == clock.now + 3  # when to look again, if neither beats
    clock.now += 2.5
    store.beat("host-b:1:y")
    assert watcher() == 0  # not silent long enough
    clock.now += 1.0
    assert watcher() == 1  # host-a silent 3.5 s; host-b beat 1 s ago

    handed, kept = store.get(silent), store.get(beating)
    assert handed is not None
    assert kept is not None
    assert handed.status is JobStatus.queued
    assert handed.lease_token is None
    assert kept.status is JobStatus.running
    assert kept.lease_owner == "host-b:1:y"
    assert [p.id for p in store.processes()] == ["host-b:1:y"]
    assert store.processes()[0].running_jobs == 1


def test_a_process_that_beat_meanwhile_is_not_removed(store: JobStore) -> None:
    store.register("host-a:1:x", host="host-a", pid=1)
    seen = store.beats()["host-a:1:x"]
    store.beat("host-a:1:x")
    assert not store.remove_if_silent("host-a:1:x", seen)
    assert store.remove_if_silent("host-a:1:x", seen + 1)
    assert store.processes() == []


def test_a_process_taken_for_dead_can_neither_call_nor_write(
    store: JobStore, settings: Settings
) -> None:
    job_id = enqueue(store, "frozen")
    keeper = LeaseKeeper(store, 3600, confirm_after=0.0)
    heartbeat = Heartbeat(store, settings, keeper)
    heartbeat._register()
    claim = store.claim(job_id, lease_seconds=3600, owner=heartbeat.process_id)
    assert claim is not None
    with keeper.hold(claim):
        keeper.confirm(claim)  # alive and holding it: the renewal succeeds
        # Another worker takes it for dead: row removed, jobs handed back and claimed anew.
        assert store.remove_if_silent(heartbeat.process_id, store.beats()[heartbeat.process_id])
        store.take_back(store.running_of(heartbeat.process_id))
        assert store.claim(job_id, lease_seconds=3600, owner="elsewhere") is not None
        with pytest.raises(LeaseLostError):
            keeper.confirm(claim)  # stale: it renews first, which fails
        with pytest.raises(LeaseLostError):
            store.checkpoint(claim, claim.progress, lease_seconds=3600)
        # Its heartbeat finds the row gone: every claim it holds is lost, it registers anew.
        assert not store.beat(heartbeat.process_id)
        assert keeper.lose_all() == 1
        with pytest.raises(LeaseLostError):
            keeper.confirm(claim)
    heartbeat._register()
    assert [p.id for p in store.processes()] == [heartbeat.process_id]
    job = store.get(job_id)
    assert job is not None
    assert job.lease_owner == "elsewhere"


def test_a_job_handed_back_is_published_ahead_of_the_waiting_messages(
    store: JobStore, settings: Settings
) -> None:
    dispatcher = RecordingDispatcher()
    scheduler = make_scheduler(settings, store, dispatcher)
    handed = enqueue(store, "handed")
    fresh = [enqueue(store, f"fresh{n}") for n in range(3)]
    # It ran once, then its process died: handed back to the scheduler.
    assert scheduler.tick() == [handed, *fresh]
    assert dispatcher.first == []
    claim = store.claim(handed, lease_seconds=3600, owner=leases.process_id())
    assert claim is not None
    store.take_back([(handed, claim.token)])
    later = enqueue(store, "later")

    assert scheduler.tick() == [handed, later]
    assert dispatcher.first == [handed]
    assert dispatcher.calls[-2:] == [[handed], [later]]


def test_provision_workers_lists_the_live_processes_and_their_running_jobs(
    store: JobStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from provision.cli import main
    from worker.settings import get_settings

    monkeypatch.setenv("PROVISIONER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PROVISIONER_BROKER_URL", "memory://")
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        assert "no worker process is running" in runner.invoke(main, ["workers"]).output
        store.register("host-a:4242:x", host="worker-host-a", pid=4242)
        busy = enqueue(store, "busy")
        assert store.claim(busy, lease_seconds=60, owner="host-a:4242:x") is not None
        table = runner.invoke(main, ["workers"]).output
        listed = runner.invoke(main, ["workers", "--json"])
    finally:
        get_settings.cache_clear()
    assert table.splitlines()[0].split() == [
        "HOST",
        "PID",
        "STARTED",
        "LAST",
        "HEARTBEAT",
        "RUNNING",
        "JOBS",
    ]
    assert table.splitlines()[1].split()[:2] == ["worker-host-a", "4242"]
    assert table.splitlines()[1].split()[-1] == "1"
    assert listed.exit_code == 0
    [row] = json.loads(listed.output)
    assert (row["id"], row["host"], row["pid"], row["running_jobs"]) == (
        "host-a:4242:x",
        "worker-host-a",
        4242,
        1,
    )
    assert {"started", "last_heartbeat"} <= set(row)
