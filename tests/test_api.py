"""The Python API: enqueue in the caller's transaction (an outbox), publish after commit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlmodel import Session, select

from producers.api import Provisioner, StaleSnapshotError
from producers.events import parse_event
from tests.databases import migrated_engine
from tests.producer_fixtures import pg_url
from tests.producer_helpers import RecordingDispatcher, event
from tests.sandbox_process import REPO_ROOT
from worker.errors import IdempotencyConflictError, InvalidRequestError
from worker.models import ProvisioningJob
from worker.settings import Settings
from worker.store import JobStore
from worker.sweeper import sweep_once

__all__ = ["pg_url"]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(database_url: str) -> JobStore:
    return JobStore(migrated_engine(database_url))


def test_job_is_published_after_the_callers_commit(store: JobStore) -> None:
    dispatcher = RecordingDispatcher()
    provisioner = Provisioner(store, dispatcher)
    with Session(store.engine) as session:
        job_id = provisioner.enqueue(session, event(1))
        assert dispatcher.published == []  # nothing leaves before the commit
        session.commit()
    assert dispatcher.published == [job_id]
    job = store.get(job_id)
    assert job is not None
    assert job.dispatched_at is not None
    status = provisioner.status("evt_1")
    assert status is not None
    assert (status["id"], status["status"]) == (job_id, "queued")


def test_rollback_leaves_no_job_and_publishes_nothing(store: JobStore) -> None:
    dispatcher = RecordingDispatcher()
    provisioner = Provisioner(store, dispatcher)
    with Session(store.engine) as session:
        provisioner.enqueue(session, event(1))
        session.rollback()
        session.commit()  # a later, empty commit must not publish the rolled-back id
    assert dispatcher.published == []
    assert store.find("evt_1") is None


def test_same_key_in_later_transactions(store: JobStore) -> None:
    provisioner = Provisioner(store, RecordingDispatcher())
    with Session(store.engine) as session:
        first = provisioner.enqueue(session, event(1))
        session.commit()
    with Session(store.engine) as session:
        assert provisioner.enqueue(session, event(1)) == first
        with pytest.raises(IdempotencyConflictError):
            provisioner.enqueue(session, event(1, domain="other.example.com"))
        with pytest.raises(InvalidRequestError):
            provisioner.enqueue(session, event(2, domain="bad domain!"))
        session.commit()  # the caller's transaction is still usable after both errors


CRASHING_PRODUCER = textwrap.dedent(
    """
    import os, sys
    from sqlmodel import Session
    from producers.api import Provisioner
    from tests.databases import migrated_engine
    from worker.store import JobStore

    class DiesBeforePublishing:
        def publish(self, ids):
            os._exit(3)  # killed between the commit and the publish

    store = JobStore(migrated_engine(sys.argv[1]))
    with Session(store.engine) as session:
        Provisioner(store, DiesBeforePublishing()).enqueue(
            session, {"id": "evt_crash", "domain": "crash.example.com"}
        )
        if sys.argv[2] == "before-commit":
            os._exit(4)
        session.commit()
    """
)


def test_crash_between_commit_and_publish_is_swept_exactly_once(
    store: JobStore, database_url: str
) -> None:
    def producer(when: str) -> int:
        return subprocess.run(
            [sys.executable, "-c", CRASHING_PRODUCER, database_url, when], cwd=REPO_ROOT, timeout=60
        ).returncode

    assert producer("before-commit") == 4
    assert store.find("evt_crash") is None  # died before commit: no job invented

    assert producer("after-commit") == 3
    job = store.find("evt_crash")
    assert job is not None
    assert job.dispatched_at is None  # committed, never published

    dispatcher = RecordingDispatcher()
    settings = Settings(undispatched_grace_seconds=0)
    sweep_once(store, dispatcher, settings)
    sweep_once(store, dispatcher, settings)
    assert dispatcher.published == [job.id]


def test_every_enqueue_path_shares_one_insert_and_one_duplicate_rule(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JobStore.enqueue is a one-row enqueue_many; the session-bound path applies the same
    check_same_request; so all three answer a reused key alike."""
    import producers.api
    import worker.store

    bulk_calls: list[int] = []
    real_bulk = JobStore.enqueue_many

    def spy_bulk(self: JobStore, items, *, batch_id=None):  # type: ignore[no-untyped-def]
        bulk_calls.append(len(items))
        return real_bulk(self, items, batch_id=batch_id)

    checks: list[str] = []
    real_check = worker.store.check_same_request

    def spy_check(key: str, new: str, existing_id: str, existing: str) -> None:
        checks.append(key)
        real_check(key, new, existing_id, existing)

    monkeypatch.setattr(JobStore, "enqueue_many", spy_bulk)
    monkeypatch.setattr(producers.api, "check_same_request", spy_check)
    monkeypatch.setattr(worker.store, "check_same_request", spy_check)

    request = parse_event(event(1)).request
    other = parse_event(event(1, domain="other.example.com")).request
    first = store.enqueue(request, key="evt_1")
    assert first.created
    assert bulk_calls == [1]
    assert store.enqueue(request, key="evt_1").job.id == first.job.id
    assert store.enqueue_many([("evt_1", request)]).duplicate == {0: first.job.id}
    provisioner = Provisioner(store, RecordingDispatcher())
    with Session(store.engine) as session:
        assert provisioner.enqueue(session, request, key="evt_1") == first.job.id
        session.commit()
    assert checks == ["evt_1"] * 3
    conflicts: list[str] = []
    with pytest.raises(IdempotencyConflictError) as caught:
        store.enqueue(other, key="evt_1")
    conflicts.append(str(caught.value))
    conflicts.append(str(store.enqueue_many([("evt_1", other)]).conflict[0]))
    with Session(store.engine) as session, pytest.raises(IdempotencyConflictError) as caught:
        provisioner.enqueue(session, other, key="evt_1")
    conflicts.append(str(caught.value))
    assert len(set(conflicts)) == 1
    assert first.job.id in conflicts[0]


def test_sqlite_transaction_that_read_before_enqueue_gets_a_clear_error(tmp_path: Path) -> None:
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'stale.db'}"))
    provisioner = Provisioner(store, RecordingDispatcher())
    with Session(store.engine) as session:
        assert store.engine.dialect.name == "sqlite"
        session.exec(select(ProvisioningJob)).all()  # the caller reads first: a read snapshot
        with Session(store.engine) as other:  # another writer commits meanwhile
            provisioner.enqueue(other, event(2))
            other.commit()
        with pytest.raises(StaleSnapshotError, match="BEGIN IMMEDIATE"):
            provisioner.enqueue(session, event(1))
        session.rollback()
        job_id = provisioner.enqueue(session, event(1))  # retried: enqueue first, then commit
        session.commit()
    assert store.get(job_id) is not None
