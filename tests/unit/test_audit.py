"""The audit trail: every operator action through every door, and the pauses workers start and
end, recorded with who, what and how many; shown by ``provision audit``; kept when jobs are
pruned; never holding a token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from pydantic import SecretStr

from provision.cli import main
from provision.http.app import create_app
from provision.tokens import load_tokens, token_hash
from testkit.databases import migrated_engine
from worker.jobs import audit
from worker.jobs.specs import JobRequest
from worker.jobs.states import Operation
from worker.jobs.store import JobStore
from worker.pauses import Pauses
from worker.settings import Settings, get_settings

APP_TOKEN = "ops-console-token-0123456789"


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated SQLite file the CLI reads too (an in-memory broker: no embedded workers)."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrated_engine(url).dispose()
    monkeypatch.setenv("PROVISIONER_DATABASE_URL", url)
    monkeypatch.setenv("PROVISIONER_BROKER_URL", "memory://")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


@pytest.fixture
def store(database: str) -> Iterator[JobStore]:
    made = JobStore(migrated_engine(database))
    yield made
    made.engine.dispose()


def queue(store: JobStore, *domains: str) -> list[str]:
    return [
        store.enqueue(JobRequest(operation=Operation.provision_site, domain=domain)).job.id
        for domain in domains
    ]


def trail(store: JobStore) -> list[audit.AuditEvent]:
    return list(reversed(audit.events(store.engine)))


def test_cli_actions_are_recorded_with_the_user_the_filter_and_the_count(
    store: JobStore,
) -> None:
    first, _second, _third = queue(store, "a.example.com", "b.example.com", "c.example.com")
    runner = CliRunner()
    assert runner.invoke(main, ["cancel", first]).exit_code == 0
    result = runner.invoke(main, ["cancel", "--status", "queued"])
    assert result.exit_code == 0, result.output
    one, many = trail(store)
    actor = audit.process_actor("cli")
    assert actor.startswith("cli:")
    assert "@" in actor
    assert (one.actor, one.action, one.target, one.count, one.detail) == (
        actor,
        "cancel",
        first,
        1,
        "cli",
    )
    assert (many.actor, many.action, many.target, many.count) == (actor, "cancel", "filter", 2)
    assert many.filter == {"status": "queued"}
    # provision audit shows them, newest first, as a table and as JSON Lines.
    table = runner.invoke(main, ["audit"])
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert lines[0].split() == ["WHEN", "WHO", "ACTION", "TARGET", "JOBS", "WHERE"]
    assert "status=queued" in lines[1]
    assert " 2 " in lines[1]
    assert first in lines[2]
    shown = [
        json.loads(line) for line in runner.invoke(main, ["audit", "--json"]).output.splitlines()
    ]
    assert [(e["action"], e["count"]) for e in shown] == [("cancel", 2), ("cancel", 1)]


def test_http_actions_are_recorded_under_the_tokens_name_never_the_token(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        '[accounts.default]\napi_key_env = "PLAUSIBLE_API_KEY"\n'
        '[tokens.ops-console]\nhash_env = "OPS_HASH"\naccounts = ["*"]\n'
        'scopes = ["jobs:read", "jobs:operate"]\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("OPS_HASH", token_hash(APP_TOKEN))
    tokens = load_tokens(Settings(accounts_file=accounts), ["default"])
    client = TestClient(create_app(store, token=SecretStr(""), tokens=tokens))
    headers = {"Authorization": f"Bearer {APP_TOKEN}"}
    job_id, *_ = queue(store, "a.example.com", "b.example.com")
    assert client.post(f"/jobs/{job_id}/cancel", headers=headers).status_code == 200
    answer = client.post("/jobs/cancel", headers=headers, json={"domain": "b.example.com"})
    assert answer.json()["changed"] == 1
    # A filter that matches nothing is an action too, recorded with its count of 0.
    nothing = client.post("/jobs/cancel", headers=headers, json={"status": "failed"})
    assert nothing.json()["changed"] == 0
    one, many, *rest = trail(store)
    assert (one.actor, one.action, one.target, one.detail) == (
        "ops-console",
        "cancel",
        job_id,
        "http",
    )
    assert (many.actor, many.count, many.filter) == ("ops-console", 1, {"domain": "b.example.com"})
    assert [(e.count, e.filter) for e in rest] == [(0, {"status": "failed"})]
    for event in trail(store):
        assert APP_TOKEN not in json.dumps(event.model_dump(mode="json"))


def test_pauses_started_and_ended_by_workers_are_recorded_once(store: JobStore) -> None:
    pauses = Pauses(store.engine)
    pauses.pause("agency-b", "site_limit_reached", "Site limit reached", key="k1")
    pauses.pause("agency-b", "site_limit_reached", "Site limit reached", key="k1")  # again
    pauses.pause("agency-b", "invalid_api_key", "Invalid API key", key="k1")  # wider
    pauses.pause("agency-b", "invalid_api_key", "Invalid API key", key="k1")  # again
    assert pauses.resume_changed_keys({"agency-b": "k1"}) == []
    assert pauses.resume_changed_keys({"agency-b": "k2"}) == ["agency-b"]
    events = trail(store)
    assert [(e.action, e.target, e.detail) for e in events] == [
        ("pause", "agency-b", "site_limit_reached"),
        ("pause", "agency-b", "invalid_api_key"),
        ("resume", "agency-b", "the key changed"),
    ]
    assert {e.actor for e in events} == {audit.process_actor("worker")}


def test_the_trail_outlives_job_retention(store: JobStore) -> None:
    (job_id,) = queue(store, "a.example.com")
    assert store.cancel(job_id)
    audit.record(store.engine, "cli:ops@host", "cancel", target=job_id, count=1)
    pruned = store.prune_finished(before=store.clock() + timedelta(days=1), limit=100)
    assert pruned == 1
    assert store.get(job_id) is None
    assert [e.target for e in trail(store)] == [job_id]
