"""The heartbeat: a lease held by a live process outlasts its length; a dead one runs out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from producers.events import parse_event
from testkit.databases import migrated_engine
from testkit.sandbox_process import REPO_ROOT
from testkit.waiting import wait_for
from worker import leases
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.leases import LeaseKeeper
from worker.times import as_utc


def test_a_held_lease_is_renewed_and_a_released_one_runs_out(tmp_path: Path) -> None:
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'l.db'}"))
    job = store.enqueue(parse_event({"domain": "a.example.com"}).request).job
    claim = store.claim(job.id, lease_seconds=0.3)
    assert claim is not None
    keeper = LeaseKeeper(store, 0.3)
    first = store.get(job.id)
    assert first is not None
    start = as_utc(first.lease_expires_at)
    assert start is not None

    def renewed_well_past_its_length() -> bool:
        now = store.get(job.id)
        expires = as_utc(now.lease_expires_at) if now is not None else None
        return expires is not None and (expires - start).total_seconds() > 1.0

    with keeper.hold(claim):
        wait_for(renewed_well_past_its_length, timeout=10, describe="the heartbeat")
        assert store.claim(job.id, lease_seconds=0.3) is None  # held: no takeover
    taken = wait_for(
        lambda: store.claim(job.id, lease_seconds=0.3), timeout=10, describe="a takeover"
    )
    assert taken.attempts == 2
    running = store.get(job.id)
    assert running is not None
    assert running.status is JobStatus.running


def test_the_jobs_of_a_dead_process_of_this_host_are_handed_back_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone.db'}"
    store = JobStore(migrated_engine(url))
    dead, alive, elsewhere = (
        store.enqueue(parse_event({"domain": f"{name}.example.com"}).request).job.id
        for name in ("dead", "alive", "elsewhere")
    )
    # Another process claims a job with a long lease, then dies without a word.
    code = (
        "import sys, os; from worker.jobs.db import make_engine; from worker.jobs.store import JobStore; "
        "from worker.leases import this_process; "
        "s = JobStore(make_engine(sys.argv[1])); "
        "assert s.claim(sys.argv[2], lease_seconds=3600, owner=this_process()); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, url, dead], check=True, cwd=REPO_ROOT, timeout=60)
    assert store.claim(alive, lease_seconds=3600, owner=leases.this_process()) is not None
    prefix = leases.host_prefix()
    assert prefix is not None
    other_host = "0" * len(prefix) + "1:1"
    assert store.claim(elsewhere, lease_seconds=3600, owner=other_host) is not None

    assert leases.release_gone(store) == 1
    statuses = {j: store.get(j).status for j in (dead, alive, elsewhere)}  # type: ignore[union-attr]
    assert statuses == {
        dead: JobStatus.queued,  # its lease had an hour to go
        alive: JobStatus.running,
        elsewhere: JobStatus.running,  # another host's process: only its lease can tell
    }
    assert store.claim(dead, lease_seconds=10) is not None  # and it runs again


def test_a_process_is_gone_only_when_it_surely_is() -> None:
    me = leases.this_process()
    prefix = leases.host_prefix()
    assert me is not None
    assert prefix is not None
    assert not leases.gone(me)
    # Our pid with another start time: the pid was reused, the owner is gone.
    assert leases.gone(f"{prefix}{os.getpid()}:1")


def test_a_process_whose_start_time_cannot_be_read_is_left_to_its_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    me = leases.this_process()
    assert me is not None
    monkeypatch.setattr(leases, "_started", lambda pid: None)  # a hidden /proc, another user's
    assert not leases.gone(me)
