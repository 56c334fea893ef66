"""``provision serve``: bearer auth (before the body), the body limit, the OpenAPI document, the
one error shape, health, idempotency, the 202 flow, listing, retry and cancel (by id or key, and
in bulk by a filter), metrics.

The service only writes job rows (queued, not dispatched); the workers' scheduler dispatches them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.types import Message

from producers.events import parse_event
from provision.http.app import create_app
from provision.http.gate import MAX_BODY_BYTES
from provisioner_types import Job, Quota
from testkit.databases import migrated_engine
from testkit.events import event
from testkit.private_services import free_port
from testkit.sandbox_process import REPO_ROOT
from testkit.services import MARK
from testkit.waiting import wait_for
from worker import metrics
from worker.accounts import load_accounts
from worker.jobs import view
from worker.jobs.db import make_engine, upgrade
from worker.jobs.intake import NewJob
from worker.jobs.specs import GoalRecord, Progress, SiteRecord
from worker.jobs.states import JobStatus, Priority
from worker.jobs.store import JobStore
from worker.quota.limiter import Limiter
from worker.quota.report import Reporter
from worker.settings import Settings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'web.db'}"))


@pytest.fixture
def client(store: JobStore) -> TestClient:
    return TestClient(create_app(store, token=SecretStr(TOKEN)))


def waiting_for_the_scheduler(store: JobStore) -> list[str]:
    """Ids of the queued, never-dispatched interactive jobs: what the scheduler will admit."""
    return [job.id for job in store.ready_jobs(["default"], Priority.interactive, limit=100)]


DATA_ROUTES = [
    ("GET", "/jobs"),
    ("GET", "/jobs/x"),
    ("GET", "/batches/x"),
    ("GET", "/quota"),
    ("GET", "/metrics"),
    ("POST", "/jobs"),
    ("POST", "/jobs/retry"),
    ("POST", "/jobs/cancel"),
    ("POST", "/jobs/x/retry"),
    ("POST", "/jobs/x/cancel"),
    ("GET", "/no/such/route"),
]


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> None:
    """The one error body: ``{"error": {"code", "message", "field"}}``, nothing else."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    assert sorted(body["error"]) == ["code", "field", "message"]
    assert (body["error"]["code"], body["error"]["field"]) == (code, field)
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


@pytest.mark.parametrize(("method", "path"), DATA_ROUTES)
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
def test_every_data_route_needs_the_token(
    client: TestClient, store: JobStore, method: str, path: str, headers: dict[str, str]
) -> None:
    response = client.request(method, path, json=event(1), headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert store.find("evt_1") is None


def test_the_docs_and_the_schema_load_without_the_token(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text  # Swagger UI fetches the schema from there
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    assert "/jobs" in schema.json()["paths"]


def test_the_routes_the_schema_marks_secured_are_exactly_those_refused_without_the_token(
    client: TestClient,
) -> None:
    schema = client.get("/openapi.json").json()
    public = set()
    for path, operations in schema["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method, operation in operations.items():
            secured = operation.get("security") == [{"bearer": []}]
            response = client.request(method.upper(), concrete)
            assert (response.status_code == 401) == secured, (method, path, response.text)
            if not secured:
                public.add(path)
    assert public == {"/healthz", "/readyz"}


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


def chunks(size: int = 65536, total: int = 64 * 1024 * 1024) -> Iterator[bytes]:
    """A chunked request body of ``total`` bytes, without its final empty chunk."""
    for _ in range(total // size):
        yield f"{size:x}\r\n".encode() + b"x" * size + b"\r\n"


def raw_http(port: int, headers: dict[str, str], body: Iterator[bytes]) -> tuple[bytes, int]:
    """POST /jobs over a plain socket, sending ``body`` from a thread while reading the answer
    (so it is read even when the server stops reading and closes): the answer, and how many
    body bytes were handed to the socket."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST /jobs HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())

        def send() -> None:
            nonlocal sent
            try:
                for piece in body:
                    sock.sendall(piece)
                    sent += len(piece)
            except OSError:
                pass  # the server closed the connection: expected once it refused the body

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = b""
        try:
            while piece := sock.recv(65536):  # until the server closes
                answer += piece
        except ConnectionResetError:
            pass
        sender.join(timeout=30)
    return answer, sent


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
    command = [sys.executable, "-m", "provision", "serve", "--port", str(port)]
    refused = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**env, "PROVISIONER_API_TOKEN": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "no token is configured (PROVISIONER_API_TOKEN" in refused.stderr
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
        for public in ("/healthz", "/readyz", "/docs", "/openapi.json"):
            assert httpx.get(f"{base}{public}").status_code == 200, public
        junk = httpx.post(f"{base}/jobs", content=b"\xff{junk", headers={"Content-Type": "x/y"})
        assert_error(junk, 401, "unauthorized")
        # 200 MiB announced, none sent: refused by its Content-Length.
        announced, _ = raw_http(port, {**AUTH, "Content-Length": str(200 * 2**20)}, iter(()))
        assert announced.startswith(b"HTTP/1.1 413 "), announced
        assert b'"body_too_large"' in announced
        # Chunked, 64 MiB: refused once over the limit, long before the sender is done.
        streamed, sent = raw_http(port, {**AUTH, "Transfer-Encoding": "chunked"}, chunks())
        assert streamed.startswith(b"HTTP/1.1 413 "), streamed
        assert sent < 32 * 2**20
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
    keys = redis.Redis.from_url(redis_url).keys()
    assert keys == [MARK.encode()]  # no message reached the broker (only the tests' own mark)


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


# -- the schema --------------------------------------------------------------------------------


def test_openapi_documents_the_models_the_bearer_scheme_and_the_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]
    assert components["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token of the accounts file, or `PROVISIONER_API_TOKEN`",
    }
    models = components["schemas"]
    for name in ("Job", "JobPage", "Batch", "Quota", "Changed", "Health", "ErrorBody"):
        assert name in models
    assert set(models["Batch"]["properties"]) >= {
        "counts",
        "failures_by_code",
        "failures_truncated",
        "expected_completion",
        "failures",
    }
    assert set(models["JobPage"]["properties"]) == {"jobs", "next_cursor"}
    assert set(models["ErrorBody"]["properties"]) == {"error"}
    assert set(models["SignupEvent"]["properties"]) == {
        "id",
        "type",
        "domain",
        "timezone",
        "goals",
        "shared_links",
        "custom_props",
        "guests",
        "tracker_script_configuration",
        "goal_id",
        "event_name",
        "page_path",
        "property",
        "email",
        "account",
        "priority",
        "callback_url",
    }
    assert "HTTPValidationError" not in json.dumps(schema)  # FastAPI's own 422 body is not ours

    def ref(path: str, method: str, status: str) -> str:
        content = schema["paths"][path][method]["responses"][status]["content"]
        return str(content["application/json"]["schema"]["$ref"]).rsplit("/", 1)[-1]

    post = schema["paths"]["/jobs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/SignupEvent"
    )
    assert ref("/jobs", "post", "202") == "Job"
    assert ref("/jobs", "get", "200") == "JobPage"
    assert ref("/batches/{batch_id}", "get", "200") == "Batch"
    assert ref("/jobs/retry", "post", "202") == "Changed"
    assert ref("/readyz", "get", "200") == "Health"
    quota = schema["paths"]["/quota"]["get"]["responses"]["200"]["content"]
    assert quota["application/json"]["schema"]["items"]["$ref"].endswith("/Quota")
    for path, method, status in [
        ("/jobs", "post", "401"),
        ("/jobs", "post", "409"),
        ("/jobs", "post", "413"),
        ("/jobs", "post", "422"),
        ("/jobs", "get", "422"),
        ("/jobs/{ref}", "get", "404"),
        ("/jobs/{ref}/retry", "post", "404"),
        ("/jobs/{ref}/retry", "post", "409"),
        ("/jobs/{ref}/cancel", "post", "409"),
        ("/jobs/cancel", "post", "422"),
        ("/metrics", "get", "401"),
        ("/readyz", "get", "503"),
    ]:
        assert ref(path, method, status) == "ErrorBody", (path, method, status)


def progressed_job(store: JobStore) -> str:
    """A failed job with every part of a view filled in: site, goals, shared links, an error."""
    job = store.enqueue(parse_event(event(1)).request, key="evt_1", batch="b1").job
    progress = Progress(
        site=SiteRecord(domain="site1.example.com", timezone="Europe/Berlin", adopted=True),
        goals={
            "event:Signup": GoalRecord(
                id=7, goal_type="event", event_name="Signup", display_name="Signup"
            )
        },
        shared_links={"WordPress": "https://plausible.example/share/site1?auth=x"},
    )
    fail(store, job.id, progress=progress)
    return job.id


def fail(
    store: JobStore, job_id: str, code: str = "site_limit_reached", progress: Progress | None = None
) -> None:
    assert job_id in store.admit({job_id: {}})  # the scheduler dispatches it; it runs and fails
    claim = store.claim(job_id, lease_seconds=60)
    assert claim is not None
    store.fail(claim, code=code, message="limit", http_status=402, progress=progress or Progress())


def reporter_for(store: JobStore) -> Reporter:
    settings = Settings(hourly_limit=600, burst_limit=60, burst_seconds=10)
    return Reporter(store, Limiter(store.engine), load_accounts(settings))


def test_the_response_models_carry_the_views_unchanged(store: JobStore) -> None:
    job_id = progressed_job(store)
    store.enqueue(parse_event(event(2)).request, key="evt_2", batch="b1")
    reporter = reporter_for(store)
    job = store.get(job_id)
    assert job is not None
    shown = view.job_view(job)
    assert shown.goals
    assert shown.shared_links
    assert shown.error
    batch = view.batch_view(store.batch_summary("b1"), reporter.batch_eta("b1")).model_dump(
        mode="json"
    )
    assert batch["failures"]
    assert batch["expected_completion"] is not None
    quotas = reporter.quotas()
    assert [Quota.model_validate(q).model_dump(mode="json") for q in quotas] == quotas

    client = TestClient(create_app(store, token=SecretStr(TOKEN), reporter=reporter))
    served_job = client.get(f"/jobs/{job_id}", headers=AUTH)
    assert served_job.json() == shown.model_dump(mode="json")
    assert Job.model_validate_json(served_job.content) == shown
    served = client.get("/batches/b1", headers=AUTH).json()
    assert {k: v for k, v in served.items() if k != "expected_completion"} == {
        k: v for k, v in batch.items() if k != "expected_completion"
    }
    assert served["expected_completion"] is not None
    assert client.get("/quota", headers=AUTH).json() == reporter.quotas()


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code", "field"),
    [
        ("GET", "/jobs", {}, 401, "unauthorized", None),
        ("GET", "/no/such/route", {"headers": AUTH}, 404, "not_found", None),
        ("GET", "/jobs/nope", {"headers": AUTH}, 404, "not_found", None),
        ("GET", "/batches/nope", {"headers": AUTH}, 404, "not_found", None),
        ("GET", "/quota", {"headers": AUTH}, 404, "not_found", None),
        ("POST", "/jobs/nope/retry", {"headers": AUTH}, 404, "not_found", None),
        ("DELETE", "/jobs", {"headers": AUTH}, 405, "method_not_allowed", None),
        (
            "GET",
            "/jobs",
            {"headers": AUTH, "params": {"limit": 0}},
            422,
            "validation_error",
            "limit",
        ),
        (
            "GET",
            "/jobs",
            {"headers": AUTH, "params": {"limit": "many"}},
            422,
            "validation_error",
            "limit",
        ),
        (
            "GET",
            "/jobs",
            {"headers": AUTH, "params": {"status": "lost"}},
            422,
            "validation_error",
            "status",
        ),
        (
            "GET",
            "/jobs",
            {"headers": AUTH, "params": {"domain": "a b"}},
            422,
            "validation_error",
            "domain",
        ),
        (
            "GET",
            "/jobs",
            {"headers": AUTH, "params": {"cursor": "zz"}},
            422,
            "bad_cursor",
            "cursor",
        ),
        (
            "POST",
            "/jobs",
            {"headers": AUTH, "content": b"{not json"},
            422,
            "validation_error",
            None,
        ),
        ("POST", "/jobs", {"headers": AUTH, "json": [1, 2]}, 422, "validation_error", None),
        (
            "POST",
            "/jobs",
            {"headers": AUTH, "json": {"domain": 5}},
            422,
            "validation_error",
            "domain",
        ),
        (
            "POST",
            "/jobs",
            {"headers": {**AUTH, "Idempotency-Key": "k"}, "json": event(1)},
            422,
            "key_mismatch",
            "id",
        ),
        ("POST", "/jobs/retry", {"headers": AUTH, "json": {}}, 422, "empty_filter", None),
        (
            "POST",
            "/jobs/retry",
            {"headers": AUTH, "json": {"stauts": "failed"}},
            422,
            "validation_error",
            "stauts",
        ),
        (
            "POST",
            "/jobs/cancel",
            {"headers": AUTH, "json": {"status": "lost"}},
            422,
            "validation_error",
            "status",
        ),
        (
            "POST",
            "/jobs/cancel",
            {"headers": JSON_AUTH, "content": b"{not json"},
            422,
            "validation_error",
            None,
        ),
        (
            "POST",
            "/jobs",
            {"headers": AUTH, "content": b" " * (MAX_BODY_BYTES + 1)},
            413,
            "body_too_large",
            None,
        ),
    ],
)
def test_every_error_answers_the_one_shape(
    client: TestClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    field: str | None,
) -> None:
    response = client.request(method, path, **kwargs)
    assert_error(response, status, code, field)
    if status == 405:
        assert "Allow" in response.headers


def test_a_reused_key_and_a_wrong_status_are_409_in_the_one_shape(client: TestClient) -> None:
    assert client.post("/jobs", json=event(1), headers=AUTH).status_code == 202
    clash = client.post("/jobs", json=event(1, domain="other.example.com"), headers=AUTH)
    assert_error(clash, 409, "idempotency_key_reused", "id")
    assert_error(client.post("/jobs/evt_1/retry", headers=AUTH), 409, "wrong_status")


def test_a_crash_is_a_500_in_the_one_shape_without_its_details(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ref: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(store, "poll", broken)
    client = TestClient(create_app(store, token=SecretStr(TOKEN)), raise_server_exceptions=False)
    response = client.get("/jobs/x", headers=AUTH)
    assert_error(response, 500, "internal_error")
    assert "secret" not in response.text


# -- the gate: the token before the body, and the body's size -----------------------------------


class Asgi:
    """One request straight to the ASGI app, counting the body bytes the app reads."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.read = 0

    def request(
        self, method: str, path: str, headers: dict[str, str], chunks: Iterable[bytes]
    ) -> tuple[int, dict[str, str], Any]:
        return anyio.run(self._request, method, path, headers, iter(chunks))

    async def _request(
        self, method: str, path: str, headers: dict[str, str], chunks: Iterator[bytes]
    ) -> tuple[int, dict[str, str], Any]:
        pending = next(chunks, None)
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal pending
            if pending is None:
                return {"type": "http.disconnect"}
            chunk, pending = pending, next(chunks, None)
            self.read += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": pending is not None}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
        }
        await self.app(scope, receive, send)
        start = sent[0]
        body = b"".join(m.get("body", b"") for m in sent[1:])
        head = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], head, json.loads(body)


def flood(total: int = 16 * 2**20, chunk: bytes = b"x" * 65536) -> Iterator[bytes]:
    """A body far over the limit, in chunks (finite, so a gate that reads on still ends)."""
    for _ in range(total // len(chunk)):
        yield chunk


def test_no_token_is_401_before_a_byte_of_the_body_is_read(client: TestClient) -> None:
    asgi = Asgi(client.app)
    status, headers, body = asgi.request(
        "POST", "/jobs", {"Content-Type": "application/json"}, flood()
    )
    assert (status, body["error"]["code"], headers["www-authenticate"]) == (
        401,
        "unauthorized",
        "Bearer",
    )
    assert asgi.read == 0
    junk = client.post(
        "/jobs", content=b"\x00not json at all", headers={"Authorization": "Bearer no"}
    )
    assert_error(junk, 401, "unauthorized")


def test_a_body_over_the_limit_is_413_without_being_read_whole(
    client: TestClient, store: JobStore
) -> None:
    declared = Asgi(client.app)
    status, _, body = declared.request(
        "POST", "/jobs", {**AUTH, "Content-Length": str(200 * 1024 * 1024)}, flood()
    )
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    assert declared.read == 0  # refused by its Content-Length

    streamed = Asgi(client.app)  # no Content-Length: counted as it streams in
    status, headers, body = streamed.request("POST", "/jobs", AUTH, flood())
    assert (status, body["error"]["code"], headers["connection"]) == (
        413,
        "body_too_large",
        "close",
    )
    assert MAX_BODY_BYTES < streamed.read <= MAX_BODY_BYTES + 65536

    # Up to the limit, a body in many chunks reaches the route whole.
    payload = json.dumps({**event(1), "padding": " " * (MAX_BODY_BYTES - 1000)}).encode()
    assert len(payload) <= MAX_BODY_BYTES
    pieces = [payload[i : i + 4096] for i in range(0, len(payload), 4096)]
    accepted = Asgi(client.app)
    status, _, body = accepted.request("POST", "/jobs", AUTH, pieces)
    assert (status, body["idempotency_key"]) == (202, "evt_1")
    assert accepted.read == len(payload)


def test_a_get_is_answered_without_waiting_for_a_body_unless_it_declares_one(
    client: TestClient,
) -> None:
    # No message at all from the client (receive says it left): a gate waiting for the body
    # would answer nothing.
    status, _, body = Asgi(client.app).request("GET", "/jobs/no-such-job", AUTH, [])
    assert (status, body["error"]["code"]) == (404, "not_found")
    declared = Asgi(client.app)
    status, _, body = declared.request(
        "GET", "/jobs/no-such-job", {**AUTH, "Transfer-Encoding": "chunked"}, flood()
    )
    assert (status, body["error"]["code"]) == (413, "body_too_large")


def test_a_client_too_slow_to_send_its_body_is_408_and_let_go(store: JobStore) -> None:
    app = create_app(store, token=SecretStr(TOKEN), body_timeout=0.2)

    async def stalled() -> tuple[int, Any]:
        first = True
        sent: list[Message] = []

        async def receive() -> Message:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b'{"domain": ', "more_body": True}
            await anyio.sleep_forever()  # the rest never comes
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/jobs", "query_string": b"",
                 "headers": [(b"authorization", f"Bearer {TOKEN}".encode())]}  # fmt: skip
        with anyio.fail_after(10):
            await app(scope, receive, send)
        return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))

    status, body = anyio.run(stalled)
    assert (status, body["error"]["code"]) == (408, "request_timeout")
    assert store.list_jobs() == []  # nothing was enqueued


def test_the_body_limit_holds_in_dev_mode_too(store: JobStore) -> None:
    app = create_app(store, token=SecretStr(""), dev_mode=True)
    status, _, body = Asgi(app).request("POST", "/jobs", {}, flood())
    assert (status, body["error"]["code"]) == (413, "body_too_large")


# -- health ------------------------------------------------------------------------------------


def test_healthz_and_readyz_answer_without_the_token_on_a_migrated_database(
    client: TestClient,
) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})


def test_readyz_is_503_on_a_database_behind_the_schema(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0001")
    client = TestClient(create_app(JobStore(engine), token=SecretStr(TOKEN)))
    response = client.get("/readyz")
    assert_error(response, 503, "schema_behind")
    assert "provision db upgrade" in response.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200
    upgrade(engine)
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_on_an_unreachable_database(tmp_path: Path) -> None:
    closed = make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing")
    response = TestClient(create_app(JobStore(closed), token=SecretStr(TOKEN))).get("/readyz")
    assert_error(response, 503, "database_unreachable")
    missing = tmp_path / "missing.db"
    client = TestClient(
        create_app(JobStore(make_engine(f"sqlite:///{missing}")), token=SecretStr(TOKEN))
    )
    assert_error(client.get("/readyz"), 503, "database_unreachable")
    assert not missing.exists()  # checking did not create it
    assert client.get("/healthz").status_code == 200


# -- retry and cancel by key, and in bulk --------------------------------------------------------


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


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_serve_the_exposition_with_its_content_type(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        metrics,
        "exposition",
        lambda: (b"provisioner_up 1\n", "text/plain; version=0.0.4; charset=utf-8"),
    )
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.content == b"provisioner_up 1\n"
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
