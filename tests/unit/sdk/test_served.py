"""``producers.client``, the typed Python client of ``provision serve`` (sync and async),
against a real ``provision serve`` subprocess over loopback (SQLite status database; no worker
runs: a test finishes a job itself, through the store, as a worker would): a submit whose answer
was lost is retried with the same key and makes one job; ``wait()`` returns the finished job;
errors map to their exceptions."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
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
    InvalidEvent,
    InvalidRequest,
    NotFound,
    ProvisionerClient,
    Unauthorized,
    WaitTimeout,
)
from producers.events import parse_event
from provisioner_types import Batch, Job, Quota
from testkit.databases import migrated_engine
from testkit.events import event
from testkit.private_services import free_port
from testkit.sandbox_process import REPO_ROOT
from testkit.sdk import FAST, TOKEN
from testkit.waiting import wait_for
from worker.jobs.specs import Progress, SiteRecord
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore

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
