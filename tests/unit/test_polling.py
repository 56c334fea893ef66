"""``GET /jobs/{ref}`` for pollers: a strong ETag of the body, 304 for ``If-None-Match``, and
``?wait=SECONDS``, which answers once the job changes or with its current state when the time
runs out (``provision.http.polling``); ``Queries.poll`` reads what ``find`` reads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from producers.events import parse_event
from provision.http.app import create_app
from provision.http.changes import JobChanges
from provision.http.polling import matches
from provision.tokens import Principal, Tokens, token_hash
from testkit.databases import migrated_engine
from testkit.events import event
from testkit.service_api import AUTH, TOKEN
from worker.jobs import view
from worker.jobs.specs import Progress, SiteRecord
from worker.jobs.store import JobStore
from worker.wakeups import Wakeup


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'poll.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = JobStore(migrated_engine(url))
    yield store
    store.reader.dispose()
    store.engine.dispose()


@pytest.fixture
def client(store: JobStore) -> TestClient:
    return TestClient(create_app(store, token=SecretStr(TOKEN)))


def queued(store: JobStore, n: int = 1, account: str = "default") -> str:
    request = parse_event(event(n)).request.model_copy(update={"account": account})
    return store.enqueue(request, key=f"evt_{n}").job.id


def run(store: JobStore, job_id: str) -> None:
    """What the scheduler and a worker do: the job is admitted, claimed and succeeds."""
    assert job_id in store.admit({job_id: {}})
    claim = store.claim(job_id, lease_seconds=60)
    assert claim is not None
    store.succeed(claim, Progress(site=SiteRecord(domain="site1.example.com", timezone="UTC")))


def test_poll_reads_the_job_and_its_webhook_as_find_does(store: JobStore) -> None:
    store.webhook_urls = {"default": "https://hooks.example.com/done"}
    job_id = queued(store)
    run(store, job_id)  # done: its completion webhook is in the outbox
    for ref in (job_id, "evt_1"):
        polled, found = store.poll(ref), store.find(ref)
        assert polled is not None
        assert found is not None
        assert polled.webhook is not None
        assert view.job_view(polled) == view.job_view(found)
    assert store.poll("no-such-job") is None


def test_the_etag_answers_304_until_the_job_changes(client: TestClient, store: JobStore) -> None:
    job_id = queued(store)
    first = client.get(f"/jobs/{job_id}", headers=AUTH)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag.startswith('"')  # strong
    assert first.json()["status"] == "queued"
    same = client.get("/jobs/evt_1", headers={**AUTH, "If-None-Match": etag})
    assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", etag)
    assert client.get(f"/jobs/{job_id}", headers={**AUTH, "If-None-Match": "*"}).status_code == 304
    run(store, job_id)
    changed = client.get(f"/jobs/{job_id}", headers={**AUTH, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["status"] == "succeeded"
    assert changed.headers["etag"] != etag
    assert "retry-after" not in changed.headers  # done: nothing more to poll for


def test_wait_answers_with_the_change_it_waited_for(client: TestClient, store: JobStore) -> None:
    job_id = queued(store)
    etag = client.get(f"/jobs/{job_id}", headers=AUTH).headers["etag"]
    timer = threading.Timer(0.5, store.cancel, (job_id,))
    timer.start()
    try:
        # Answered at once, it would be the queued job the client has (304).
        waited = client.get(
            f"/jobs/{job_id}", params={"wait": 30}, headers={**AUTH, "If-None-Match": etag}
        )
    finally:
        timer.join()
    assert waited.status_code == 200
    assert waited.json()["status"] == "cancelled"


def test_wait_without_an_etag_waits_for_a_change_from_now(
    client: TestClient, store: JobStore
) -> None:
    job_id = queued(store)
    timer = threading.Timer(0.5, store.cancel, (job_id,))
    timer.start()
    try:
        waited = client.get(f"/jobs/{job_id}", params={"wait": 30}, headers=AUTH)
    finally:
        timer.join()
    assert waited.json()["status"] == "cancelled"


def test_when_the_wait_runs_out_the_answer_is_the_current_state(
    client: TestClient, store: JobStore
) -> None:
    job_id = queued(store)
    plain = client.get(f"/jobs/{job_id}", params={"wait": 0.3}, headers=AUTH)
    assert (plain.status_code, plain.json()["status"]) == (200, "queued")
    etag = plain.headers["etag"]
    held = client.get(
        f"/jobs/{job_id}", params={"wait": 0.3}, headers={**AUTH, "If-None-Match": etag}
    )
    assert (held.status_code, held.headers["etag"]) == (304, etag)


def test_a_done_job_is_answered_at_once(client: TestClient, store: JobStore) -> None:
    job_id = queued(store)
    run(store, job_id)
    # 60 s of waiting would fail the test's timeout budget; a done job does not change.
    assert client.get(f"/jobs/{job_id}", params={"wait": 60}, headers=AUTH).status_code == 200


@pytest.mark.parametrize("wait", ["61", "-1", "soon"])
def test_a_wait_out_of_bounds_is_422_naming_the_field(
    client: TestClient, store: JobStore, wait: str
) -> None:
    job_id = queued(store)
    answer = client.get(f"/jobs/{job_id}", params={"wait": wait}, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "wait"


def test_waiting_on_another_accounts_job_is_404(store: JobStore) -> None:
    mine = Principal("mine", frozenset({"jobs:read"}), frozenset({"default"}))
    tokens = Tokens({token_hash(TOKEN): mine})
    client = TestClient(create_app(store, token=SecretStr(""), tokens=tokens))
    theirs = queued(store, 2, account="other")
    for params in ({}, {"wait": 0.2}):
        answer = client.get(f"/jobs/{theirs}", params=params, headers=AUTH)
        assert answer.status_code == 404
        assert "etag" not in answer.headers


@pytest.mark.parametrize(
    ("header", "matched"),
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abcd"', False),
        ("abc", False),
        ("", False),
    ],
)
def test_if_none_match_compares_as_rfc_9110_says(header: str, matched: bool) -> None:
    assert matches(header, '"abc"') is matched


def test_a_poll_survives_the_server_dropping_its_connections(postgres_url: str) -> None:
    """The reader pool does not ping before each read: a dropped connection fails once, and
    the read is made again on a new one."""
    store = JobStore(migrated_engine(postgres_url))
    try:
        job_id = queued(store)
        assert store.poll(job_id) is not None  # a reader connection now waits in the pool
        with store.engine.connect() as connection:
            connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        polled = store.poll(job_id)
        assert polled is not None
        assert polled.id == job_id
    finally:
        store.reader.dispose()
        store.engine.dispose()


def test_updated_at_says_when_each_job_last_changed(store: JobStore) -> None:
    first, second = queued(store, 1), queued(store, 2)
    before = store.updated_at([first, second, "no-such-job"])
    assert set(before) == {first, second}
    store.cancel(first)
    after = store.updated_at([first, second])
    assert after[first] != before[first]
    assert after[second] == before[second]


def test_a_wakeup_ends_the_pause_of_the_waiters_of_a_job_that_changed(store: JobStore) -> None:
    """One wake-up, one read of the waited jobs: the waiter of the job that changed is woken
    long before its pause ends; the waiter of the other one sleeps its pause out."""
    changed, untouched = queued(store, 1), queued(store, 2)
    wakeup = Wakeup()
    changes = JobChanges(store, wakeup, ThreadPoolExecutor(2))

    async def waiters() -> tuple[bool, bool]:
        first, second = store.poll(changed), store.poll(untouched)
        assert first is not None
        assert second is not None
        woken = asyncio.ensure_future(changes.until_changed(changed, first.updated_at, 60))
        slept = asyncio.ensure_future(changes.until_changed(untouched, second.updated_at, 1.0))
        await asyncio.sleep(0.2)  # both are waiting by then
        await asyncio.to_thread(store.cancel, changed)
        wakeup.set()
        return await woken, await slept

    assert asyncio.run(waiters()) == (True, False)


def test_the_schema_documents_wait_the_etag_and_304(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/jobs/{ref}"]["get"]
    assert {"304", "404", "422"} <= set(operation["responses"])
    assert {p["name"] for p in operation["parameters"]} >= {"ref", "wait", "if-none-match"}
    assert operation["x-scope"] == "jobs:read"
