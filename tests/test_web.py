"""``provision serve``: bearer auth, idempotency, the 202 flow, listing, retry and cancel.

The service only writes job rows (queued, not dispatched); the workers' scheduler dispatches them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from producers.web import create_app
from tests.databases import migrated_engine
from tests.producer_fixtures import redis_url
from tests.producer_helpers import event
from tests.sandbox_process import REPO_ROOT
from tests.waiting import wait_for
from worker.models import JobStatus, Priority, Progress
from worker.store import JobStore

__all__ = ["redis_url"]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'web.db'}"))


@pytest.fixture
def client(store: JobStore) -> TestClient:
    return TestClient(create_app(store, token=SecretStr(TOKEN)))


def waiting_for_the_scheduler(store: JobStore) -> list[str]:
    """Ids of the queued, never-dispatched interactive jobs: what the scheduler will admit."""
    return [
        job.id for job in store.admission_candidates(["default"], Priority.interactive, limit=100)
    ]


@pytest.mark.parametrize("path", ["/jobs", "/jobs/x", "/batches/x", "/docs", "/openapi.json"])
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
def test_every_route_needs_the_token(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_docs_are_served_with_the_token(client: TestClient) -> None:
    assert client.get("/docs", headers=AUTH).status_code == 200
    assert "/jobs" in client.get("/openapi.json", headers=AUTH).json()["paths"]


def test_no_token_refuses_to_start_unless_dev_mode(store: JobStore) -> None:
    with pytest.raises(RuntimeError, match="PROVISIONER_API_TOKEN"):
        create_app(store, token=SecretStr(""))
    app = create_app(store, token=SecretStr(""), dev_mode=True)
    assert TestClient(app).get("/jobs").status_code == 200


def test_post_answers_202_and_the_same_key_returns_the_same_job(
    client: TestClient, store: JobStore
) -> None:
    first = client.post("/jobs", json=event(1), headers=AUTH)
    assert first.status_code == 202
    job = first.json()
    assert first.headers["Location"] == f"/jobs/{job['id']}"
    assert first.headers["Retry-After"] == "2"
    assert (job["status"], job["domain"], job["idempotency_key"]) == (
        "queued",
        "site1.example.com",
        "evt_1",
    )
    again = client.post("/jobs", json=event(1), headers=AUTH)
    assert again.status_code == 202
    assert again.json()["id"] == job["id"]
    assert waiting_for_the_scheduler(store) == [job["id"]]  # one row, left to the scheduler
    polled = client.get(first.headers["Location"], headers=AUTH)
    assert polled.status_code == 200
    assert polled.json()["id"] == job["id"]
    assert client.get("/jobs/evt_1", headers=AUTH).json()["id"] == job["id"]


def test_posted_jobs_are_interactive_unless_the_event_asks_for_bulk(
    client: TestClient, store: JobStore
) -> None:
    interactive = client.post("/jobs", json=event(1), headers=AUTH).json()
    bulk = client.post("/jobs", json=event(2, priority="bulk"), headers=AUTH).json()
    stored = [store.get(view["id"]) for view in (interactive, bulk)]
    assert [job.priority if job else None for job in stored] == [
        Priority.interactive,
        Priority.bulk,
    ]
    assert waiting_for_the_scheduler(store) == [interactive["id"]]


def test_an_unknown_account_is_422_naming_the_field(store: JobStore) -> None:
    client = TestClient(create_app(store, token=SecretStr(TOKEN), accounts=["default"]))
    response = client.post("/jobs", json=event(1, account="nobody"), headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "account"
    assert store.find("evt_1") is None
    named = client.post("/jobs", json=event(2, account="default"), headers=AUTH)
    assert named.status_code == 202


def test_same_key_different_body_is_409(client: TestClient) -> None:
    assert client.post("/jobs", json=event(1), headers=AUTH).status_code == 202
    clash = client.post("/jobs", json=event(1, domain="other.example.com"), headers=AUTH)
    assert clash.status_code == 409
    assert clash.json()["detail"]["code"] == "idempotency_key_reused"


def test_idempotency_key_header(client: TestClient) -> None:
    body = event(1)
    del body["id"]
    first = client.post("/jobs", json=body, headers={**AUTH, "Idempotency-Key": "hdr-1"})
    assert first.status_code == 202
    assert first.json()["idempotency_key"] == "hdr-1"
    again = client.post("/jobs", json=body, headers={**AUTH, "Idempotency-Key": "hdr-1"})
    assert again.json()["id"] == first.json()["id"]
    mismatch = client.post("/jobs", json=event(2), headers={**AUTH, "Idempotency-Key": "hdr-2"})
    assert mismatch.status_code == 422


def test_invalid_event_is_422_naming_the_field(client: TestClient, store: JobStore) -> None:
    response = client.post("/jobs", json=event(1, timezone="Mars/Olympus"), headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "timezone"
    assert store.find("evt_1") is None


def test_list_by_filters_with_pagination(client: TestClient) -> None:
    for n in range(7):
        client.post("/jobs", json=event(n), headers=AUTH)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"status": "queued", "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/jobs", params=params, headers=AUTH).json()
        seen += [job["idempotency_key"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"evt_{n}" for n in range(7))
    assert len(seen) == 7
    by_domain = client.get("/jobs", params={"domain": "https://SITE3.example.com/"}, headers=AUTH)
    assert [job["idempotency_key"] for job in by_domain.json()["jobs"]] == ["evt_3"]


def test_cancel_queued_and_retry_failed(client: TestClient, store: JobStore) -> None:
    queued = client.post("/jobs", json=event(1), headers=AUTH).json()
    cancelled = client.post(f"/jobs/{queued['id']}/cancel", headers=AUTH)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert client.post(f"/jobs/{queued['id']}/cancel", headers=AUTH).status_code == 409
    assert client.post(f"/jobs/{queued['id']}/retry", headers=AUTH).status_code == 409

    other = client.post("/jobs", json=event(2), headers=AUTH).json()
    assert store.admit(other["id"], {})  # the scheduler dispatches it; it runs and fails
    claim = store.claim(other["id"], lease_seconds=60)
    assert claim is not None
    store.fail(
        claim, code="site_limit_reached", message="limit", http_status=402, progress=Progress()
    )
    assert client.post(f"/jobs/{other['id']}/cancel", headers=AUTH).status_code == 409
    retried = client.post(f"/jobs/{other['id']}/retry", headers=AUTH)
    assert retried.status_code == 202
    assert (retried.json()["status"], retried.json()["attempts"], retried.json()["error"]) == (
        "queued",
        0,
        None,
    )
    retried_job = store.get(other["id"])
    assert retried_job is not None
    assert (retried_job.status, retried_job.dispatched_at) == (JobStatus.queued, None)
    assert waiting_for_the_scheduler(store) == [other["id"]]  # the scheduler dispatches it again
    batch = client.get("/batches/nope", headers=AUTH)
    assert batch.status_code == 404
    assert client.post("/jobs/nope/cancel", headers=AUTH).status_code == 404


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_real_provision_serve_over_loopback(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    database_url = f"sqlite:///{tmp_path / 'serve.db'}"
    migrated_engine(database_url).dispose()
    env = {
        **os.environ,
        "PROVISIONER_DATABASE_URL": database_url,
        "PROVISIONER_BROKER_URL": redis_url,  # no worker runs; the service publishes nothing
        "PROVISIONER_API_TOKEN": TOKEN,
    }
    env.pop("PROVISIONER_DEV_MODE", None)
    command = [sys.executable, "-m", "producers.cli", "serve", "--port", str(port)]
    refused = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**env, "PROVISIONER_API_TOKEN": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "PROVISIONER_API_TOKEN is not set" in refused.stderr
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/jobs", headers=AUTH).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                return False

        wait_for(up, timeout=30, describe="provision serve to answer")
        assert httpx.get(f"{base}/jobs").status_code == 401
        created = httpx.post(f"{base}/jobs", json=event(1), headers=AUTH)
        assert created.status_code == 202
        location = created.headers["Location"]
        polled = httpx.get(f"{base}{location}", headers=AUTH)
        assert polled.json()["status"] == "queued"
        assert (
            httpx.post(f"{base}/jobs", json=event(1), headers=AUTH).json()["id"]
            == created.json()["id"]
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert TOKEN not in (tmp_path / "serve.log").read_text()  # the secret is never logged
    store = JobStore(migrated_engine(database_url))
    job = store.get(created.json()["id"])
    assert job is not None
    assert (job.status, job.dispatched_at, job.priority) == (
        JobStatus.queued,
        None,
        Priority.interactive,
    )
    assert redis.Redis.from_url(redis_url).dbsize() == 0  # no message reached the broker


def test_a_numeric_body_id_matches_the_same_idempotency_key_header(client: TestClient) -> None:
    first = client.post("/jobs", json=event(1, id=42), headers={**AUTH, "Idempotency-Key": "42"})
    assert first.status_code == 202
    assert first.json()["idempotency_key"] == "42"
    again = client.post(
        "/jobs", json=event(1, id="42"), headers={**AUTH, "Idempotency-Key": " 42 "}
    )
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/jobs", json=event(1, id=43), headers={**AUTH, "Idempotency-Key": "42"})
    assert other.status_code == 422
    assert other.json()["detail"]["code"] == "key_mismatch"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": [], "domain": "a.example.com"}, "type"),
        ({"type": {}, "domain": "a.example.com"}, "type"),
        ({"id": "evt_\ud800", "domain": "a.example.com"}, "id"),
        ({"domain": "a\u0000.example.com"}, "domain"),
        (
            event(1, goals=[{"goal_type": "event", "event_name": "Sign\ud800"}]),
            "goals[0].event_name",
        ),
        (
            event(
                1,
                goals=[
                    {"goal_type": "event", "event_name": "Visit /x"},
                    {"goal_type": "page", "page_path": "/x"},
                ],
            ),
            "goals[1].display_name",
        ),
        ({"type": "goal.delete", "domain": "a.example.com", "goal_id": 0}, "goal_id"),
        ({"domain": "a.example.com", "priority": "urgent"}, "priority"),
        ({"domain": "a.example.com", "account": ""}, "account"),
    ],
)
def test_edge_inputs_are_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    # Encoded by hand: JSON escapes a lone surrogate as \ud800, which a client may refuse to send.
    response = client.post(
        "/jobs",
        content=json.dumps(body).encode(),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == field
