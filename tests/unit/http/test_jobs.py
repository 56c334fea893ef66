"""``provision serve``'s job routes: the 202 flow and idempotency, listing, retry and cancel
(by id or key, and in bulk by a filter). The service only writes job rows (queued, not
dispatched); the workers' scheduler dispatches them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from producers.events import parse_event
from provision.http.app import create_app
from testkit.events import event
from testkit.service_api import (
    AUTH,
    TOKEN,
    assert_error,
    fail,
    waiting_for_the_scheduler,
)
from worker.jobs.intake import NewJob
from worker.jobs.specs import Progress
from worker.jobs.states import JobStatus, Priority
from worker.jobs.store import JobStore


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
    assert response.json()["error"]["field"] == "account"
    assert store.find("evt_1") is None
    named = client.post("/jobs", json=event(2, account="default"), headers=AUTH)
    assert named.status_code == 202


def test_same_key_different_body_is_409(client: TestClient) -> None:
    assert client.post("/jobs", json=event(1), headers=AUTH).status_code == 202
    clash = client.post("/jobs", json=event(1, domain="other.example.com"), headers=AUTH)
    assert clash.status_code == 409
    assert clash.json()["error"]["code"] == "idempotency_key_reused"


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
    assert response.json()["error"]["field"] == "timezone"
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
    assert other["id"] in store.admit(
        {other["id"]: {}}
    )  # the scheduler dispatches it; it runs and fails
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
    assert other.json()["error"]["code"] == "key_mismatch"


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
    assert response.json()["error"]["field"] == field


def test_retry_and_cancel_take_an_idempotency_key(client: TestClient, store: JobStore) -> None:
    queued = client.post("/jobs", json=event(1, id="retry"), headers=AUTH).json()
    # A key that spells a bulk route is still a key: GET /jobs/retry is this job.
    assert client.get("/jobs/retry", headers=AUTH).json()["id"] == queued["id"]
    cancelled = client.post("/jobs/retry/cancel", headers=AUTH)
    assert (cancelled.status_code, cancelled.json()["id"], cancelled.json()["status"]) == (
        200,
        queued["id"],
        "cancelled",
    )
    other = client.post("/jobs", json=event(2), headers=AUTH).json()
    fail(store, other["id"])
    retried = client.post("/jobs/evt_2/retry", headers=AUTH)
    assert (retried.status_code, retried.json()["status"]) == (202, "queued")
    assert retried.headers["Location"] == f"/jobs/{other['id']}"
    assert_error(client.post("/jobs/evt_2/retry", headers=AUTH), 409, "wrong_status")
    assert_error(client.post("/jobs/evt_9/cancel", headers=AUTH), 404, "not_found")


def statuses(store: JobStore, ids: Iterable[str]) -> dict[str, str]:
    jobs = [store.get(job_id) for job_id in ids]
    return {job.idempotency_key: job.status.value for job in jobs if job is not None}


def test_bulk_retry_changes_exactly_the_failed_jobs_the_filter_matches(
    client: TestClient, store: JobStore
) -> None:
    ids = {}
    for key, batch, code in [
        ("a1", "A", "domain_taken"),
        ("a2", "A", "domain_taken"),
        ("a3", "A", "site_limit_reached"),
        ("b1", "B", "domain_taken"),
        ("a4", "A", None),  # queued: nothing to retry
    ]:
        n = len(ids)
        ids[key] = store.enqueue(parse_event(event(n)).request, key=key, batch=batch).job.id
        if code is not None:
            fail(store, ids[key], code=code)
    response = client.post(
        "/jobs/retry", json={"batch_id": "A", "code": "domain_taken"}, headers=AUTH
    )
    assert response.status_code == 202
    assert response.json()["changed"] == 2
    assert sorted(response.json()["ids"]) == sorted([ids["a1"], ids["a2"]])
    assert statuses(store, ids.values()) == {
        "a1": "queued",
        "a2": "queued",
        "a3": "failed",
        "b1": "failed",
        "a4": "queued",
    }
    again = client.post("/jobs/retry", json={"batch_id": "A", "code": "domain_taken"}, headers=AUTH)
    assert again.json() == {"changed": 0, "ids": []}


def test_bulk_cancel_changes_exactly_the_waiting_jobs_the_filter_matches(
    client: TestClient, store: JobStore
) -> None:
    for n in range(4):
        client.post("/jobs", json=event(n), headers=AUTH)
    fail(store, client.get("/jobs/evt_3", headers=AUTH).json()["id"])
    # The domain is normalised as in an event.
    one = client.post(
        "/jobs/cancel", json={"domain": "https://www.SITE1.example.com/"}, headers=AUTH
    )
    assert one.status_code == 200
    assert one.json() == {
        "changed": 1,
        "ids": [client.get("/jobs/evt_1", headers=AUTH).json()["id"]],
    }
    rest = client.post("/jobs/cancel", json={"account": "default"}, headers=AUTH)
    assert rest.json()["changed"] == 2  # evt_0 and evt_2; evt_1 is cancelled, evt_3 failed
    keys = [f"evt_{n}" for n in range(4)]
    assert {k: client.get(f"/jobs/{k}", headers=AUTH).json()["status"] for k in keys} == {
        "evt_0": "cancelled",
        "evt_1": "cancelled",
        "evt_2": "cancelled",
        "evt_3": "failed",
    }


@pytest.mark.parametrize("body", [{}, {"status": None}, {"batch_id": None, "code": None}])
def test_an_empty_filter_is_refused_and_changes_nothing(
    client: TestClient, store: JobStore, body: dict[str, Any]
) -> None:
    queued = client.post("/jobs", json=event(1), headers=AUTH).json()
    for action in ("retry", "cancel"):
        assert_error(client.post(f"/jobs/{action}", json=body, headers=AUTH), 422, "empty_filter")
    assert statuses(store, [queued["id"]]) == {"evt_1": "queued"}


def test_bulk_answers_list_at_most_1000_ids(client: TestClient, store: JobStore) -> None:
    requests = [NewJob(f"k{n}", parse_event(event(n)).request) for n in range(1001)]
    store.enqueue_many(requests, batch="big")
    response = client.post("/jobs/cancel", json={"batch_id": "big"}, headers=AUTH).json()
    assert response["changed"] == 1001
    assert len(response["ids"]) == len(set(response["ids"])) == 1000
