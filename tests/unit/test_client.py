"""``producers.client``: the typed Python client of ``provision serve``, sync and async.

Against a real ``provision serve`` subprocess over loopback (SQLite status database; no worker
runs: a test finishes a job itself, through the store, as a worker would): a submit whose answer
was lost is retried with the same key and makes one job; ``wait()`` returns the finished job;
errors map to their exceptions. The retry policy in detail against ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
import pytest

from producers.client import (
    AsyncProvisionerClient,
    Conflict,
    ConnectionFailed,
    InvalidEvent,
    InvalidRequest,
    NotFound,
    ProvisionerClient,
    RateLimited,
    Retries,
    ServiceError,
    Unauthorized,
    WaitTimeout,
)
from producers.events import parse_event
from provisioner_types import Batch, Job, Quota
from testkit.databases import migrated_engine
from testkit.events import event
from testkit.private_services import free_port
from testkit.sandbox_process import REPO_ROOT
from testkit.waiting import wait_for
from worker.jobs.specs import Progress, SiteRecord
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore

TOKEN = "client-s3cret-token"
#: Retries without pauses worth waiting for.
FAST = Retries(attempts=5, total_seconds=30, backoff_initial=0.01, backoff_max=0.05)


# -- a real provision serve ---------------------------------------------------------------------


@dataclass
class Served:
    base_url: str
    port: int
    store: JobStore


@pytest.fixture
def served(tmp_path: Path, redis_url: str) -> Iterator[Served]:
    """``provision serve`` on a free loopback port, its status database in ``tmp_path``."""
    port = free_port()
    database_url = f"sqlite:///{tmp_path / 'serve.db'}"
    engine = migrated_engine(database_url)
    env = {
        **os.environ,
        "PROVISIONER_DATABASE_URL": database_url,
        "PROVISIONER_BROKER_URL": redis_url,  # no worker runs; the service publishes nothing
        "PROVISIONER_API_TOKEN": TOKEN,
    }
    env.pop("PROVISIONER_DEV_MODE", None)
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "provision", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return httpx.get(f"{base_url}/readyz").status_code == 200
                except httpx.TransportError:
                    assert proc.poll() is None, log_path.read_text()
                    return False

            wait_for(up, timeout=30, describe="provision serve to answer")
            yield Served(base_url, port, JobStore(engine))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            engine.dispose()
    assert TOKEN not in log_path.read_text()


def finish(store: JobStore, job_id: str) -> None:
    """Do what the scheduler and a worker would: dispatch the job, run it, succeed."""
    assert job_id in store.admit({job_id: {}})
    claim = store.claim(job_id, lease_seconds=60)
    assert claim is not None
    site = SiteRecord(domain=claim.request.domain, timezone="Europe/Berlin")
    store.succeed(claim, Progress(site=site))


def fail(store: JobStore, job_id: str) -> None:
    assert job_id in store.admit({job_id: {}})
    claim = store.claim(job_id, lease_seconds=60)
    assert claim is not None
    store.fail(
        claim, code="site_limit_reached", message="limit", http_status=402, progress=Progress()
    )


class Recording(httpx.HTTPTransport):
    """The real transport, noting each request's method and path."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []
        self.queries: list[dict[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        self.queries.append(dict(request.url.params))
        return super().handle_request(request)


class AsyncRecording(httpx.AsyncHTTPTransport):
    def __init__(self, on_request: Callable[[httpx.Request], None]) -> None:
        super().__init__()
        self.on_request = on_request

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.on_request(request)
        return await super().handle_async_request(request)


# -- a proxy that loses the first answer --------------------------------------------------------


def read_request(conn: socket.socket) -> bytes:
    """One HTTP/1.1 request with a Content-Length body (or none), whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        piece = conn.recv(65536)
        if not piece:
            break
        body += piece
    return head + b"\r\n\r\n" + body


def header(request: bytes, name: str) -> str | None:
    head = request.partition(b"\r\n\r\n")[0].decode()
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


class DroppingProxy:
    """A TCP proxy in front of the service. The first connection's request goes through, and
    once the service's answer starts arriving the client's connection is closed without it, as
    when a network drops an answer. Every later connection is relayed both ways."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self.dropped: list[tuple[bytes, bytes]] = []  # (request, the answer's start) lost
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            self.connections += 1
            handle = self._drop if self.connections == 1 else self._relay
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    def _drop(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(self.upstream, timeout=30) as upstream:
            request = read_request(conn)
            upstream.sendall(request)
            answer = upstream.recv(65536)  # the service has answered: the job exists
            self.dropped.append((request, answer))

    def _relay(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream, timeout=30)
        upstream.settimeout(None)

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while piece := source.recv(65536):
                    sink.sendall(piece)
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        back.start()
        pump(conn, upstream)
        back.join(timeout=30)
        conn.close()
        upstream.close()


# -- against provision serve ---------------------------------------------------------------------


def test_a_submit_whose_answer_was_lost_is_retried_with_the_same_key_and_makes_one_job(
    served: Served,
) -> None:
    signup = event(101)
    del signup["id"]  # the client makes the key: one per submit call
    with (
        DroppingProxy(served.port) as proxy,
        ProvisionerClient(f"http://127.0.0.1:{proxy.port}", TOKEN, retries=FAST) as client,
    ):
        job = client.submit(signup)
    assert len(proxy.dropped) == 1
    request, answer = proxy.dropped[0]
    assert request.startswith(b"POST /jobs HTTP/1.1")
    assert answer.startswith(b"HTTP/1.1 202 "), answer  # made, then lost on the way back
    assert proxy.connections == 2
    assert header(request, "Idempotency-Key") == job.idempotency_key
    uuid.UUID(job.idempotency_key)
    rows = served.store.find_by_domain("site101.example.com")
    assert [row.id for row in rows] == [job.id]
    assert (job.status, job.domain, job.done) == (JobStatus.queued, "site101.example.com", False)


def test_submit_get_and_wait_for_the_finished_job(served: Served) -> None:
    recording = Recording()
    with ProvisionerClient(served.base_url, TOKEN, transport=recording) as client:
        job = client.submit(event(201))
        assert isinstance(job, Job)
        assert job.idempotency_key == "evt_201"
        assert client.submit(event(201)).id == job.id  # same key, same event: the same job
        assert client.get("evt_201") == client.get(job.id)
        polled = ("GET", f"/jobs/{job.id}")
        before = recording.seen.count(polled)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.wait, job.id, timeout=60)
            wait_for(
                lambda: recording.seen.count(polled) > before,
                timeout=30,
                describe="wait() to poll the job",
            )
            finish(served.store, job.id)
            done = waiting.result(timeout=60)
    assert (done.id, done.status, done.done) == (job.id, JobStatus.succeeded, True)
    assert done.finished_at is not None
    # wait() asked the service to hold its answers until the job changed (running, then done:
    # one or two answers), and said which state it had seen last.
    asked = [q for seen, q in zip(recording.seen, recording.queries, strict=True) if seen == polled]
    assert 1 <= recording.seen.count(polled) - before <= 2
    assert all("wait" in query for query in asked[before:])


def test_wait_times_out_with_the_last_job_seen(served: Served) -> None:
    with ProvisionerClient(served.base_url, TOKEN) as client:
        job = client.submit(event(202))
        with pytest.raises(WaitTimeout) as raised:
            client.wait(job.id, timeout=0.3)
    assert isinstance(raised.value, TimeoutError)
    assert (raised.value.job.id, raised.value.job.status) == (job.id, JobStatus.queued)
    assert "not done after 0.3 s" in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"goals": [{"goal_type": "nope"}]}, "goals[0].goal_type"),
    ],
)
def test_an_invalid_event_raises_invalid_event_naming_the_field(
    served: Served, overrides: dict[str, Any], field: str
) -> None:
    with ProvisionerClient(served.base_url, TOKEN) as client, pytest.raises(InvalidEvent) as raised:
        client.submit(event(301, **overrides))
    error = raised.value
    assert isinstance(error, InvalidRequest)
    assert (error.status, error.code, error.field) == (422, "validation_error", field)
    assert error.message
    assert served.store.find_by_domain("site301.example.com") == []


def test_wrong_token_unknown_job_and_reused_key(served: Served) -> None:
    with ProvisionerClient(served.base_url, "not-the-token") as stranger:
        with pytest.raises(Unauthorized) as unauthorized:
            stranger.get("anything")
        assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")
        assert "not-the-token" not in str(unauthorized.value) + repr(unauthorized.value)
        with pytest.raises(Unauthorized):
            stranger.submit(event(401))
    with ProvisionerClient(served.base_url, TOKEN) as client:
        with pytest.raises(NotFound) as missing:
            client.get("no-such-job")
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        with pytest.raises(NotFound):
            client.batch("no-such-batch")
        first = client.submit(event(402))
        with pytest.raises(Conflict) as reused:
            client.submit(event(402, timezone="Europe/Paris"))  # same key, another event
        assert (reused.value.status, reused.value.code, reused.value.field) == (
            409,
            "idempotency_key_reused",
            "id",
        )
        assert [job.id for job in client.jobs(domain="site402.example.com")] == [first.id]


def test_cancel_retry_and_their_conflicts(served: Served) -> None:
    with ProvisionerClient(served.base_url, TOKEN) as client:
        queued = client.submit(event(501))
        cancelled = client.cancel("evt_501")
        assert (cancelled.id, cancelled.status, cancelled.done) == (
            queued.id,
            JobStatus.cancelled,
            True,
        )
        with pytest.raises(Conflict) as again:
            client.cancel(queued.id)
        assert again.value.code == "wrong_status"
        with pytest.raises(Conflict) as not_failed:
            client.retry(queued.id)
        assert not_failed.value.code == "wrong_status"
        failing = client.submit(event(502))
        fail(served.store, failing.id)
        retried = client.retry(failing.id)
        assert (retried.status, retried.attempts) == (JobStatus.queued, 0)
        with pytest.raises(NotFound):
            client.cancel("no-such-job")


def test_jobs_follows_the_cursor_and_batch_and_quota_answer_their_models(served: Served) -> None:
    ids = [
        served.store.enqueue(parse_event(event(n)).request, key=f"evt_{n}", batch="b-1").job.id
        for n in range(601, 606)
    ]
    recording = Recording()
    with ProvisionerClient(served.base_url, TOKEN, transport=recording) as client:
        listed = list(client.jobs(batch_id="b-1", page_size=2))
        assert [job.id for job in listed] == ids
        assert recording.seen.count(("GET", "/jobs")) == 3  # 2 + 2 + 1
        assert list(client.jobs(batch_id="b-1", status=JobStatus.failed)) == []
        summary = client.batch("b-1")
        assert isinstance(summary, Batch)
        assert (summary.total, summary.done, summary.counts["queued"]) == (5, False, 5)
        quotas = client.quota()
        assert [quota.quota for quota in quotas] == ["default"]
        assert all(isinstance(quota, Quota) for quota in quotas)
        with pytest.raises(InvalidRequest) as bad:
            list(client.jobs(status="no-such-status"))
        assert not isinstance(bad.value, InvalidEvent)
        assert (bad.value.status, bad.value.field) == (422, "status")


def test_the_async_client_submits_gets_lists_and_waits(served: Served) -> None:
    async def main() -> Job:
        polled = anyio.Event()
        job_path: list[str] = []

        def on_request(request: httpx.Request) -> None:
            if request.method == "GET" and request.url.path in job_path:
                polled.set()

        transport = AsyncRecording(on_request)
        async with AsyncProvisionerClient(served.base_url, TOKEN, transport=transport) as client:
            job = await client.submit(event(701))
            assert (await client.submit(event(701))).id == job.id
            assert (await client.get("evt_701")).id == job.id
            assert [j.id async for j in client.jobs(domain="site701.example.com")] == [job.id]
            with pytest.raises(NotFound):
                await client.get("no-such-job")
            with pytest.raises(InvalidEvent) as invalid:
                await client.submit(event(702, timezone="Mars/Olympus"))
            assert invalid.value.field == "timezone"
            job_path.append(f"/jobs/{job.id}")

            async def finisher() -> None:
                await polled.wait()
                await anyio.to_thread.run_sync(finish, served.store, job.id)

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(finisher)
                    done = await client.wait(job.id, timeout=60)
            with pytest.raises(WaitTimeout):
                await client.wait((await client.submit(event(703))).id, timeout=0.2)
            return done

    done = anyio.run(main)
    assert (done.status, done.done) == (JobStatus.succeeded, True)


# -- the retry policy, against httpx.MockTransport ----------------------------------------------


def job_json(status: str = "queued", **overrides: Any) -> dict[str, Any]:
    job = {
        "id": "job-1",
        "idempotency_key": "evt_1",
        "operation": "provision_site",
        "status": status,
        "done": status in ("succeeded", "failed", "cancelled"),
        "domain": "site1.example.com",
        "adopted": None,
        "existed": None,
        "batch_id": None,
        "goals": [],
        "shared_links": [],
        "deleted": None,
        "attempts": 0,
        "error": None,
        "next_attempt_at": None,
        "created_at": "2025-01-31T12:00:00+00:00",
        "updated_at": "2025-01-31T12:00:00+00:00",
        "finished_at": None,
    }
    return {**job, **overrides}


def error(status: int, code: str, field: str | None = None, **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} happened", "field": field}}
    return httpx.Response(status, json=body, headers=headers)


Answer = httpx.Response | Exception


class Scripted:
    """A MockTransport handler answering from a script, the last answer repeating; it keeps
    every request."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        # A fresh copy: one response object is not sent twice.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    def client(self, retries: Retries | int = FAST, token: str = TOKEN) -> ProvisionerClient:
        return ProvisionerClient(
            "http://provisioner.test", token, retries=retries, transport=httpx.MockTransport(self)
        )


def accepted(**overrides: Any) -> httpx.Response:
    return httpx.Response(202, json=job_json(**overrides), headers={"Retry-After": "2"})


def test_submit_retries_5xx_429_and_408_sending_the_same_key_and_bytes_each_time() -> None:
    script = Scripted(
        error(500, "internal_error"),
        httpx.Response(502, text="<html>Bad Gateway</html>", headers={"Content-Type": "text/html"}),
        error(503, "database_unreachable"),
        error(429, "too_many", **{"Retry-After": "0"}),
        error(408, "request_timeout"),
        accepted(),
    )
    signup = event(1)
    del signup["id"]
    with script.client(retries=Retries(attempts=6, backoff_initial=0, backoff_max=0)) as client:
        job = client.submit(signup)
    assert job == Job.model_validate(job_json())
    assert len(script.requests) == 6
    keys = {request.headers["Idempotency-Key"] for request in script.requests}
    assert len(keys) == 1
    uuid.UUID(keys.pop())
    assert len({request.content for request in script.requests}) == 1
    assert json.loads(script.requests[0].content) == signup
    assert {request.headers["Authorization"] for request in script.requests} == {f"Bearer {TOKEN}"}


def test_the_key_is_the_events_id_else_one_new_key_per_submit_call() -> None:
    script = Scripted(accepted())
    with script.client() as client:
        client.submit({"domain": "a.example.com"})
        client.submit({"domain": "a.example.com"})
        client.submit({"id": " evt_9 ", "domain": "a.example.com"})
        client.submit({"id": 42, "domain": "a.example.com"})
        client.submit({"domain": "a.example.com"}, idempotency_key="mine")
        client.submit({"id": "ünïcode", "domain": "a.example.com"})
    keys = [request.headers.get("Idempotency-Key") for request in script.requests]
    assert keys[0] != keys[1]
    assert keys[2:] == ["evt_9", "42", "mine", None]  # a non-ASCII id travels in the body only
    assert json.loads(script.requests[5].content)["id"] == "ünïcode"


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "bad_request", ServiceError),
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", ServiceError),
        (404, "not_found", NotFound),
        (409, "idempotency_key_reused", Conflict),
        (413, "body_too_large", ServiceError),
        (422, "validation_error", InvalidEvent),
    ],
)
def test_4xx_other_than_408_and_429_is_not_retried(
    status: int, code: str, kind: type[ServiceError]
) -> None:
    script = Scripted(error(status, code, "field_x"), accepted())
    with script.client() as client, pytest.raises(kind) as raised:
        client.submit(event(1))
    assert type(raised.value) is kind
    assert (raised.value.status, raised.value.code, raised.value.field) == (status, code, "field_x")
    assert len(script.requests) == 1


def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    script = Scripted(error(500, "internal_error"))
    with (
        script.client(retries=Retries(attempts=3, backoff_initial=0)) as client,
        pytest.raises(ServiceError) as raised,
    ):
        client.get("job-1")
    assert (raised.value.status, raised.value.code) == (500, "internal_error")
    assert len(script.requests) == 3
    with Scripted(error(429, "slow_down")).client(retries=1) as once, pytest.raises(RateLimited):
        once.get("job-1")


def test_retry_after_is_honoured(caplog: pytest.LogCaptureFixture) -> None:
    # A backoff far longer than the test could wait: only the Retry-After lets it retry now.
    slow = Retries(attempts=3, total_seconds=600, backoff_initial=300, backoff_max=300)
    script = Scripted(error(503, "busy", **{"Retry-After": "0"}), accepted())
    with caplog.at_level(logging.INFO, "producers.client"), script.client(retries=slow) as client:
        assert client.submit(event(1)).id == "job-1"
    assert len(script.requests) == 2
    assert "retry 1 in 0.00s" in caplog.text


def test_a_retry_after_past_the_time_left_ends_the_retries() -> None:
    script = Scripted(error(503, "busy", **{"Retry-After": "3600"}), accepted())
    with (
        script.client(retries=Retries(attempts=5, total_seconds=30)) as client,
        pytest.raises(ServiceError) as raised,
    ):
        client.submit(event(1))
    assert (raised.value.status, raised.value.retry_after) == (503, 3600.0)
    assert len(script.requests) == 1


def test_connection_errors_and_timeouts_are_retried_then_raise_connection_failed() -> None:
    script = Scripted(
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        accepted(),
    )
    with script.client() as client:
        assert client.submit(event(1)).id == "job-1"
    assert len(script.requests) == 4
    assert len({request.headers["Idempotency-Key"] for request in script.requests}) == 1
    down = Scripted(httpx.ConnectError("[Errno 111] Connection refused"))
    with (
        down.client(retries=Retries(attempts=2, backoff_initial=0)) as client,
        pytest.raises(ConnectionFailed) as raised,
    ):
        client.get("job-1")
    assert (raised.value.status, raised.value.code) == (None, "connection_failed")
    assert isinstance(raised.value.error, httpx.ConnectError)
    assert raised.value.__cause__ is None
    assert "Connection refused" in str(raised.value)
    assert len(down.requests) == 2


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_retry_and_cancel_are_repeated_only_when_surely_not_acted_on(action: str) -> None:
    for answer in (httpx.ReadError("reset"), httpx.ReadTimeout("slow"), error(500, "boom")):
        script = Scripted(answer, httpx.Response(200, json=job_json()))
        with script.client() as client, pytest.raises(ServiceError) as raised:
            getattr(client, action)("job-1")
        assert len(script.requests) == 1, answer
        if isinstance(raised.value, ConnectionFailed):
            assert "may have been acted on" in raised.value.message
    refused = (httpx.ConnectError("refused"), error(503, "busy"), error(429, "slow"))
    script = Scripted(*refused, httpx.Response(200, json=job_json()))
    with script.client() as client:
        assert getattr(client, action)("job-1").id == "job-1"
    assert len(script.requests) == 4
    assert script.requests[0].url.path == f"/jobs/job-1/{action}"


def test_an_answer_not_in_the_error_shape_is_unexpected_response() -> None:
    page = "<html><body><h1>404 Not Found</h1> nginx</body></html>"
    script = Scripted(httpx.Response(404, text=page, headers={"Content-Type": "text/html"}))
    with script.client() as client, pytest.raises(ServiceError) as raised:
        client.get("job-1")
    assert type(raised.value) is ServiceError  # not NotFound: the service never said so
    assert (raised.value.status, raised.value.code, raised.value.field) == (
        404,
        "unexpected_response",
        None,
    )
    assert "404 Not Found" in raised.value.message
    assert "text/html" in raised.value.message
    portal = Scripted(httpx.Response(200, text="<html>Sign in to the Wi-Fi</html>"))
    with portal.client() as client, pytest.raises(ServiceError) as raised:
        client.get("job-1")
    assert (raised.value.status, raised.value.code) == (200, "unexpected_response")
    gateway = Scripted(httpx.Response(502, text="Bad Gateway"), accepted())
    with gateway.client() as client:
        assert client.get("job-1").id == "job-1"  # a proxy's 502 is still retried


def test_the_token_never_appears_in_messages_or_reprs() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        # A misbehaving proxy that echoes the request headers in its error page.
        # The token sits across the point where the message cuts the page short.
        echoed = f"{'x' * 180} {request.headers['Authorization']} {dict(request.headers)}"
        return httpx.Response(403, text=f"<pre>{echoed}</pre>")

    raised: list[BaseException] = []
    with ProvisionerClient(
        "http://provisioner.test", TOKEN, transport=httpx.MockTransport(echo)
    ) as client:
        assert TOKEN not in repr(client)
        with pytest.raises(ServiceError) as echoed:
            client.get("job-1")
        assert "Bearer [redac" in echoed.value.message  # no part of the token, cut or not
        assert TOKEN[:5] not in echoed.value.message
        raised.append(echoed.value)
    quoting = Scripted(error(422, "validation_error", f"Bearer {TOKEN}"))
    with quoting.client() as client, pytest.raises(InvalidEvent) as quoted:
        client.submit(event(1))
    raised.append(quoted.value)
    down = Scripted(httpx.ConnectError(f"refused {TOKEN}"))
    with down.client(retries=1) as client, pytest.raises(ConnectionFailed) as failed:
        client.get("job-1")
    raised.append(failed.value)
    for exc in raised:
        shown = str(exc) + repr(exc) + repr(exc.args) + "".join(traceback.format_exception(exc))
        assert TOKEN not in shown, type(exc)


def test_wait_polls_as_the_retry_after_says_and_times_out_with_the_last_job() -> None:
    queued = httpx.Response(200, json=job_json(), headers={"Retry-After": "0"})
    script = Scripted(queued, queued, httpx.Response(200, json=job_json("succeeded")))
    with script.client() as client:
        # interval is only for answers without Retry-After; the service's 0 s wins.
        assert client.wait("job-1", timeout=60, interval=600).status == JobStatus.succeeded
        assert len(script.requests) == 3
        with pytest.raises(WaitTimeout) as raised:
            Scripted(queued).client().wait("job-1", timeout=0)
    assert raised.value.job.status == JobStatus.queued
    assert raised.value.ref == "job-1"


def test_wait_asks_the_service_to_hold_each_answer_until_the_job_changes() -> None:
    etag = {"ETag": '"v1"', "Retry-After": "2"}
    script = Scripted(
        httpx.Response(200, json=job_json(), headers=etag),
        httpx.Response(304, headers=etag),  # the hold ran out: still as the client has it
        httpx.Response(200, json=job_json("succeeded"), headers={"ETag": '"v2"'}),
    )
    with script.client() as client:
        assert client.wait("job-1", timeout=100).status == JobStatus.succeeded
    first, second, third = script.requests
    assert 0 < float(first.url.params["wait"]) <= 30  # held, so Retry-After was not slept
    assert "if-none-match" not in first.headers
    assert second.headers["if-none-match"] == third.headers["if-none-match"] == '"v1"'
    assert float(third.url.params["wait"]) <= 100


def test_refs_are_quoted_into_the_path() -> None:
    script = Scripted(httpx.Response(200, json=job_json()))
    with script.client() as client:
        client.get("key with/slash?")
    assert script.requests[0].url.raw_path == b"/jobs/key%20with%2Fslash%3F"
    with pytest.raises(ValueError, match="ref"):
        client.get("")


def test_the_errors_pickle() -> None:
    job = Job.model_validate(job_json())
    for exc in (
        InvalidEvent(422, "validation_error", "bad", "timezone"),
        ConnectionFailed(None, "connection_failed", "down"),
        WaitTimeout("job-1", 1.5, job),
    ):
        again = pickle.loads(pickle.dumps(exc))
        assert (type(again), str(again), repr(again)) == (type(exc), str(exc), repr(exc))


def test_retries_are_validated() -> None:
    with pytest.raises(ValueError, match="attempts"):
        Retries(attempts=0)
    with pytest.raises(ValueError, match="negative"):
        Retries(total_seconds=-1)


def test_the_async_client_retries_with_the_same_key() -> None:
    script = Scripted(
        httpx.ConnectError("refused"),
        error(503, "busy", **{"Retry-After": "0"}),
        accepted(),
    )

    async def main() -> Job:
        async with AsyncProvisionerClient(
            "http://provisioner.test", TOKEN, retries=FAST, transport=httpx.MockTransport(script)
        ) as client:
            job = await client.submit({"domain": "a.example.com"})
            script.answers = [error(409, "wrong_status"), accepted()]
            with pytest.raises(Conflict):
                await client.cancel("job-1")
            return job

    assert anyio.run(main).id == "job-1"
    assert len(script.requests) == 4
    assert len({request.headers["Idempotency-Key"] for request in script.requests[:3]}) == 1
