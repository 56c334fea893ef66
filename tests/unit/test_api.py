"""The Python API: enqueue in the caller's transaction; the row is the outbox the scheduler reads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlmodel import Session, select

from producers.api import Provisioner, StaleSnapshotError
from producers.events import parse_event
from provisioner_types import Batch, Job
from testkit.databases import migrated_engine
from testkit.events import event
from testkit.sandbox_process import REPO_ROOT
from worker.errors import IdempotencyConflictError, InvalidRequestError
from worker.jobs.intake import NewJob
from worker.jobs.models import ProvisioningJob
from worker.jobs.states import JobStatus, Priority
from worker.jobs.store import JobStore
from worker.settings import Settings


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(database_url: str) -> JobStore:
    return JobStore(migrated_engine(database_url))


def jobs_with_key(store: JobStore, key: str) -> list[ProvisioningJob]:
    with Session(store.engine) as session:
        return list(
            session.exec(select(ProvisioningJob).where(ProvisioningJob.idempotency_key == key))
        )


def test_after_the_callers_commit_the_job_waits_queued_for_the_scheduler(store: JobStore) -> None:
    provisioner = Provisioner(store)
    with Session(store.engine) as session:
        job_id = provisioner.enqueue(session, event(1))
        assert store.find("evt_1") is None  # other connections see nothing before the commit
        session.commit()
    job = store.get(job_id)
    assert job is not None
    assert (job.status, job.dispatched_at, job.dispatch_count) == (JobStatus.queued, None, 0)
    assert (job.priority, job.account) == (Priority.interactive, "default")
    waiting = store.ready_jobs(["default"], Priority.interactive, limit=10)
    assert [candidate.id for candidate in waiting] == [job_id]  # what the scheduler will see
    status = provisioner.status("evt_1")
    assert status is not None
    assert isinstance(status, Job)
    assert (status.id, status.status) == (job_id, JobStatus.queued)


def test_rollback_leaves_no_job(store: JobStore) -> None:
    provisioner = Provisioner(store)
    with Session(store.engine) as session:
        provisioner.enqueue(session, event(1))
        session.rollback()
        session.commit()  # a later, empty commit must not resurrect the rolled-back row
    assert store.find("evt_1") is None
    assert store.ready_jobs(["default"], Priority.interactive, limit=10) == []


def test_an_events_own_priority_wins_over_the_callers_default(store: JobStore) -> None:
    provisioner = Provisioner(store)
    with Session(store.engine) as session:
        asked_bulk = provisioner.enqueue(session, event(1, priority="bulk"))
        defaulted_bulk = provisioner.enqueue(session, event(2), priority=Priority.bulk)
        asked_interactive = provisioner.enqueue(
            session, event(3, priority="interactive"), priority=Priority.bulk
        )
        session.commit()
    stored = [store.get(job_id) for job_id in (asked_bulk, defaulted_bulk, asked_interactive)]
    assert [job.priority if job else None for job in stored] == [
        Priority.bulk,
        Priority.bulk,
        Priority.interactive,
    ]


def test_an_unknown_account_is_refused_naming_the_field(store: JobStore) -> None:
    provisioner = Provisioner(store, accounts=["default", "agency"])
    with Session(store.engine) as session:
        with pytest.raises(InvalidRequestError) as caught:
            provisioner.enqueue(session, event(1, account="nobody"))
        assert caught.value.field == "account"
        job_id = provisioner.enqueue(session, event(2, account="agency"))
        session.commit()
    assert store.find("evt_1") is None
    job = store.get(job_id)
    assert job is not None
    assert job.account == "agency"


def test_same_key_in_later_transactions(store: JobStore) -> None:
    provisioner = Provisioner(store)
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
    from testkit.databases import migrated_engine
    from worker.jobs.store import JobStore

    store = JobStore(migrated_engine(sys.argv[1]))
    with Session(store.engine) as session:
        Provisioner(store).enqueue(session, {"id": "evt_crash", "domain": "crash.example.com"})
        if sys.argv[2] == "before-commit":
            os._exit(4)
        session.commit()
        os._exit(3)  # killed right after the commit, before anything else could run
    """
)


def test_a_producer_killed_after_its_commit_leaves_exactly_one_job_for_the_scheduler(
    store: JobStore, database_url: str
) -> None:
    def producer(when: str) -> int:
        return subprocess.run(
            [sys.executable, "-c", CRASHING_PRODUCER, database_url, when], cwd=REPO_ROOT, timeout=60
        ).returncode

    assert producer("before-commit") == 4
    assert jobs_with_key(store, "evt_crash") == []  # died before commit: no job invented

    assert producer("after-commit") == 3
    assert producer("after-commit") == 3  # the caller retries: the same key, still one row
    [job] = jobs_with_key(store, "evt_crash")
    assert (job.status, job.dispatched_at, job.dispatch_count) == (JobStatus.queued, None, 0)
    waiting = store.ready_jobs(["default"], Priority.interactive, limit=10)
    assert [candidate.id for candidate in waiting] == [job.id]  # in the scheduler's outbox


def test_every_enqueue_path_shares_one_insert_and_one_duplicate_rule(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JobStore.enqueue is a one-row enqueue_many; the session-bound path applies the same
    check_same_request; so all three answer a reused key alike."""
    import producers.api
    import worker.jobs.intake

    bulk_calls: list[int] = []
    real_bulk = JobStore.enqueue_many

    def spy_bulk(self: JobStore, items, **options):  # type: ignore[no-untyped-def]
        bulk_calls.append(len(items))
        return real_bulk(self, items, **options)

    checks: list[str] = []
    real_check = worker.jobs.intake.check_same_request

    def spy_check(key: str, new: str, existing_id: str, existing: str) -> None:
        checks.append(key)
        real_check(key, new, existing_id, existing)

    monkeypatch.setattr(JobStore, "enqueue_many", spy_bulk)
    monkeypatch.setattr(producers.api, "check_same_request", spy_check)
    monkeypatch.setattr(worker.jobs.intake, "check_same_request", spy_check)

    request = parse_event(event(1)).request
    other = parse_event(event(1, domain="other.example.com")).request
    first = store.enqueue(request, key="evt_1")
    assert first.created
    assert bulk_calls == [1]
    assert store.enqueue(request, key="evt_1").job.id == first.job.id
    assert store.enqueue_many([NewJob("evt_1", request)]).duplicate == {0: first.job.id}
    provisioner = Provisioner(store)
    with Session(store.engine) as session:
        assert provisioner.enqueue(session, request, key="evt_1") == first.job.id
        session.commit()
    assert checks == ["evt_1"] * 3
    conflicts: list[str] = []
    with pytest.raises(IdempotencyConflictError) as caught:
        store.enqueue(other, key="evt_1")
    conflicts.append(str(caught.value))
    conflicts.append(str(store.enqueue_many([NewJob("evt_1", other)]).conflict[0]))
    with Session(store.engine) as session, pytest.raises(IdempotencyConflictError) as caught:
        provisioner.enqueue(session, other, key="evt_1")
    conflicts.append(str(caught.value))
    assert len(set(conflicts)) == 1
    assert first.job.id in conflicts[0]


def test_sqlite_transaction_that_read_before_enqueue_gets_a_clear_error(tmp_path: Path) -> None:
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'stale.db'}"))
    provisioner = Provisioner(store)
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


def test_from_settings_builds_everything_from_the_cli_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrated_engine(url).dispose()
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[accounts.agency]\napi_key_env = "AGENCY_KEY"\n')
    provisioner = Provisioner.from_settings(Settings(database_url=url, accounts_file=accounts))
    with Session(provisioner.store.engine) as session:
        provisioner.enqueue(session, {"id": "a", "domain": "a.example.com", "account": "agency"})
        provisioner.enqueue(session, {"id": "b", "domain": "b.example.com"}, batch_id="B1")
        with pytest.raises(InvalidRequestError) as raised:
            provisioner.enqueue(session, {"domain": "c.example.com", "account": "nobody"})
        assert raised.value.field == "account"
        session.commit()
    batch = provisioner.batch("B1")
    assert batch is not None
    assert isinstance(batch, Batch)
    assert batch.total == 1
    assert batch.expected_completion is not None  # from the quota and the work ahead
    assert provisioner.batch("nothing") is None
    provisioner.store.engine.dispose()


def test_from_settings_on_a_database_behind_this_version_says_what_to_run(
    tmp_path: Path,
) -> None:
    from worker.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="provision db upgrade"):
        Provisioner.from_settings(Settings(database_url=f"sqlite:///{tmp_path / 'none.db'}"))
