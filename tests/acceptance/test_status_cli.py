"""``provision status``: by job id, idempotency key, batch and domain; text and JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from producers.importer import import_file
from provision.cli import main
from testkit.databases import migrated_engine
from testkit.events import event, jsonl
from worker.jobs.specs import Progress
from worker.jobs.store import JobStore
from worker.settings import get_settings

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
