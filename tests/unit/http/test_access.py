"""``provision serve``'s door: the bearer token (checked before a byte of the body is read),
the body limit, a client too slow to send its body, health, and a real process over loopback."""

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

from provision.http.app import create_app
from provision.http.gate import MAX_BODY_BYTES
from testkit.databases import migrated_engine
from testkit.events import event
from testkit.private_services import free_port
from testkit.sandbox_process import REPO_ROOT
from testkit.service_api import (
    AUTH,
    TOKEN,
    assert_error,
)
from testkit.services import MARK
from testkit.waiting import wait_for
from worker.jobs.db import make_engine, upgrade
from worker.jobs.states import JobStatus, Priority
from worker.jobs.store import JobStore

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
