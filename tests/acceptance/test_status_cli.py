"""``provision status``: by job id, idempotency key, batch and domain; text and JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from producers.importer import import_file
from provision.cli import main
from provision.status import lookup, quick_lookup
from testkit.databases import migrated_engine
from testkit.events import event, jsonl
from worker.jobs.claims import Claim
from worker.jobs.specs import GoalRecord, JobRequest, Progress, SiteRecord
from worker.jobs.states import Operation
from worker.jobs.store import JobStore
from worker.settings import get_settings
from worker.times import utcnow

JOB_KEYS = {
    "id",
    "idempotency_key",
    "operation",
    "status",
    "domain",
    "goals",
    "shared_links",
    "attempts",
    "error",
}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobStore]:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    monkeypatch.setenv("PROVISIONER_DATABASE_URL", url)
    get_settings.cache_clear()
    yield JobStore(migrated_engine(url))
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["status", *args])
    return result.exit_code, result.output


def imported(store: JobStore, tmp_path: Path) -> str:
    path = tmp_path / "batch.jsonl"
    path.write_text(jsonl(event(1), event(2), event(3, domain="https://www.Shared.Example.com/")))
    return import_file(store, path).batch_id


def fail(store: JobStore, key: str) -> str:
    job = store.get_by_key(key)
    assert job is not None
    claim = store.claim(job.id, lease_seconds=60)
    assert claim is not None
    store.fail(
        claim,
        code="domain_taken",
        message="someone else has it",
        http_status=400,
        progress=Progress(),
    )
    return job.id


def test_one_job_by_id_or_key_as_json(store: JobStore, tmp_path: Path) -> None:
    imported(store, tmp_path)
    job = store.get_by_key("evt_1")
    assert job is not None
    for ref in (job.id, "evt_1"):
        code, out = run("--json", ref)
        assert code == 0, out
        view = json.loads(out)
        assert view.keys() >= JOB_KEYS
        assert (view["id"], view["status"], view["error"]) == (job.id, "queued", None)


def test_a_batch_shows_counts_per_status_and_failures(store: JobStore, tmp_path: Path) -> None:
    batch = imported(store, tmp_path)
    fail(store, "evt_2")
    code, out = run("--json", batch)
    assert code == 0, out
    view = json.loads(out)
    assert view["total"] == 3
    assert (view["counts"]["queued"], view["counts"]["failed"]) == (2, 1)
    assert view["failures"][0]["idempotency_key"] == "evt_2"
    assert view["failures"][0]["error"] == {
        "code": "domain_taken",
        "message": "someone else has it",
    }
    code, text = run("--by", "batch", batch)
    assert code == 0
    assert "queued=2" in text
    assert "failed=1" in text
    assert "domain_taken: someone else has it" in text


def test_jobs_of_a_domain_by_any_spelling(store: JobStore, tmp_path: Path) -> None:
    imported(store, tmp_path)
    code, out = run("--json", "--by", "domain", "http://shared.example.com")
    assert code == 0, out
    assert [view["idempotency_key"] for view in json.loads(out)] == ["evt_3"]
    code, text = run("shared.example.com")
    assert code == 0
    assert "evt_3" in text
    assert "STATUS" in text


def test_unknown_reference_is_an_error(store: JobStore) -> None:
    code, out = run("nothing-here")
    assert code == 1
    assert "no job, batch or domain" in out


def jobs_in_every_state(store: JobStore) -> list[str]:
    """A job queued, running with a checkpoint, succeeded with goals, links and a webhook,
    failed, waiting and cancelled; and one whose key is another job's id."""
    site = SiteRecord(domain="done.example.com", timezone="UTC", adopted=True)
    goal = GoalRecord(id=7, goal_type="event", event_name="Signup", display_name="Signup")

    def new(name: str, **fields: Any) -> str:
        request = JobRequest(
            operation=Operation.provision_site, domain=f"{name}.example.com", **fields
        )
        return store.enqueue(request, key=f"key-{name}").job.id

    def claimed(name: str, **fields: Any) -> Claim:
        claim = store.claim(new(name, **fields), lease_seconds=600)
        assert claim is not None
        return claim

    queued = new("queued")
    store.checkpoint(claimed("running"), Progress(site=site), lease_seconds=600)
    store.succeed(
        claimed("succeeded", callback_url="https://hooks.example.com/done"),
        Progress(site=site, goals={"event:Signup": goal}, shared_links={"Dash": "https://s/x"}),
    )
    new("failed")
    fail(store, "key-failed")
    store.park(
        claimed("waiting"),
        until=utcnow() + timedelta(hours=1),
        code="rate_limited",
        message="429",
        http_status=429,
        progress=Progress(),
    )
    store.cancel(new("cancelled"))
    other = JobRequest(operation=Operation.delete_site, domain="other.example.com")
    store.enqueue(other, key=queued)
    jobs = store.list_jobs(limit=100)
    return [ref for job in jobs for ref in (job.id, job.idempotency_key)]


def test_a_job_read_without_sqlalchemy_is_shown_as_the_store_shows_it(
    database_url: str,
) -> None:
    """``quick_lookup`` (the database's own driver) and ``lookup`` (the store) give the same
    bytes, in JSON and as text, for a job in every state, by id and by key."""
    store = JobStore(migrated_engine(database_url))
    refs = jobs_in_every_state(store)
    assert len(refs) == 14
    for ref in refs:
        quick = quick_lookup(database_url, ref)
        slow = lookup(store, ref, "job")
        assert quick is not None, ref
        assert slow is not None, ref
        assert json.dumps(quick.as_json(), indent=2) == json.dumps(slow.as_json(), indent=2)
        assert quick.as_text() == slow.as_text()
    webhook = quick_lookup(database_url, "key-succeeded")
    assert webhook is not None
    assert webhook.as_json()["webhook"]["type"] == "job.succeeded"
    store.engine.dispose()


def test_what_the_driver_cannot_read_is_left_to_the_store(store: JobStore, tmp_path: Path) -> None:
    """No such job, a database file that is not there, a database behind this version's schema:
    ``quick_lookup`` answers None and the store says what is wrong."""
    url = str(store.engine.url)
    imported(store, tmp_path)
    assert quick_lookup(url, "evt_1") is not None
    assert quick_lookup(url, "nothing-here") is None
    assert quick_lookup(f"sqlite:///{tmp_path / 'missing.db'}", "evt_1") is None
    assert quick_lookup(f"{url}?timeout=5", "evt_1") is None  # a form left to SQLAlchemy
    assert not (tmp_path / "missing.db").exists()
    with store.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    assert quick_lookup(url, "evt_1") is None
    code, out = run("evt_1")
    assert code == 2
    assert "provision db upgrade" in out
