"""What an operator sees of real workers: Prometheus metrics summed over a worker's prefork
children, JSON log lines tagged with the job, Celery's own tools (``celery -A
worker.celery_app``), and a failed job as a failed Celery task in the task events."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.private_services import free_port
from testkit.sandbox_process import REPO_ROOT
from testkit.services import redis_client
from testkit.waiting import wait_for
from testkit.workers import Stack, WorkerProcess, assert_all_succeeded, provision_request
from worker.app import QUEUE, create_app
from worker.jobs.states import JobStatus

JOB = {"operation": "provision_site", "account": "default"}


def scrape(port: int) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    response.raise_for_status()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    return response.text, samples


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def nodename(worker: WorkerProcess) -> str:
    return worker.args[worker.args.index("--hostname") + 1].replace("%h", socket.gethostname())


def json_log(worker: WorkerProcess) -> tuple[list[dict[str, Any]], list[str]]:
    """The worker's log file: its JSON lines, and the other lines (Celery's banner, on stdout)."""
    records, other = [], []
    for line in worker.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
        elif line.strip():
            other.append(line)
    return records, other


def test_a_worker_serves_metrics_summed_over_its_pool_and_logs_json_lines(
    sqlite_stack: Stack,
) -> None:
    stack = sqlite_stack
    secret = f"sk-{uuid.uuid4().hex}"
    stack.sandbox.add_key(key=secret)
    with stack.sandbox.client("other-team-key") as other:
        assert other.post("/api/v1/sites", json={"domain": "taken.example.com"}).status_code == 200
    port = free_port()
    worker = stack.start_worker(
        pool="prefork", concurrency=2, api_key=secret, metrics_port=port, log_format="json"
    )

    domains = [f"metrics{n}.example.com" for n in range(4)]
    ids = stack.submit_sites(domains)
    failing = stack.submit(provision_request("taken.example.com"), key="evt-taken").job.id
    jobs = stack.wait_done([*ids, failing])
    assert_all_succeeded([j for j in jobs if j.id != failing])

    expected = {
        key("provisioner_jobs_total", status="succeeded", **JOB): 4,
        key("provisioner_jobs_total", status="failed", **JOB): 1,
        key("provisioner_job_errors_total", status="failed", code="domain_taken"): 1,
        key("provisioner_job_run_seconds_count", operation="provision_site"): 5,
        key("provisioner_step_seconds_count", step="goal"): 8,
        key("provisioner_api_requests_total", route="POST /api/v1/sites", status="200"): 4,
        key("provisioner_api_requests_total", route="POST /api/v1/sites", status="400"): 1,
        key("provisioner_api_requests_total", route="GET /api/v1/sites/:site_id", status="401"): 1,
        key("provisioner_api_requests_total", route="PUT /api/v1/sites/goals", status="200"): 8,
        key(
            "provisioner_api_requests_total", route="PUT /api/v1/sites/shared-links", status="200"
        ): 4,
        key("provisioner_api_request_seconds_count", route="PUT /api/v1/sites/goals"): 8,
    }

    def counted() -> tuple[str, dict[Any, float]] | None:
        text, samples = scrape(port)  # a run is counted just after its row is written
        return (text, samples) if all(samples.get(k) == v for k, v in expected.items()) else None

    text, samples = wait_for(
        counted,
        timeout=15,
        describe=lambda: f"the counts {expected}; scraped:\n{scrape(port)[0]}",
    )
    hour = {"quota": "default", "window": "hour"}
    assert samples[key("provisioner_quota_collector_up")] == 1
    assert samples[key("provisioner_quota_limit", **hour)] == 10_000_000
    used = samples[key("provisioner_quota_used", **hour)]
    assert used >= 18  # 4 calls per site, and the POST and GET of the failed job
    assert samples[key("provisioner_quota_remaining", **hour)] == 10_000_000 - used
    waiting = key("provisioner_jobs_waiting", quota="default", account="default", priority="bulk")
    assert samples[waiting] == 0
    assert secret not in text
    assert "metrics0.example.com" not in text

    # The counts live in files of the multiprocess directory, not in the children that made
    # them: kill the pool, run one more job on new children, and the sum goes on.
    killed = worker.kill_pool()
    wait_for(
        lambda: worker.pool_pids() and not set(worker.pool_pids()) & set(killed),
        timeout=20,
        describe="a new pool",
    )
    (late,) = stack.submit_sites(["metrics-late.example.com"])
    assert_all_succeeded(stack.wait_done([late]))
    succeeded = key("provisioner_jobs_total", status="succeeded", **JOB)
    wait_for(lambda: scrape(port)[1].get(succeeded) == 5, timeout=15, describe="5 successes")

    records, unstructured = json_log(worker)
    assert secret not in worker.log_path.read_text(errors="replace")
    # Celery's banner goes to stdout as it is; every log line is JSON, even those of the
    # pool's logger (the children killed above) and warnings
    assert not [line for line in unstructured if line.startswith("[20")], (
        "a line in Celery's format"
    )
    assert not [line for line in unstructured if "exited with" in line or "Warning" in line], (
        unstructured
    )
    assert any(r["logger"] == "multiprocessing" and "exited with" in r["message"] for r in records)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(" ready." in r["message"] for r in records)
    assert any("sweeper started" in r["message"] for r in records)
    by_job: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if "job_id" in record:
            by_job.setdefault(record["job_id"], []).append(record)
    for job_id, domain in zip(ids, domains, strict=True):
        lines = by_job[job_id]
        assert any("succeeded" in r["message"] for r in lines), lines
        assert all(
            (r["idempotency_key"], r["domain"], r["operation"], r["account"])
            == (f"signup-{domain}", domain, "provision_site", "default")
            for r in lines
        )
        assert {r["pid"] for r in lines} <= set(killed), "jobs run in pool children"
    assert any(r["level"] == "WARNING" and "domain_taken" in r["message"] for r in by_job[failing])


def test_celery_tools_reach_a_running_worker_through_worker_celery_app(
    sqlite_stack: Stack,
) -> None:
    worker = sqlite_stack.start_worker(concurrency=1)
    env = sqlite_stack.env()
    del env["PLAUSIBLE_API_KEY"]  # inspecting needs no key
    node = nodename(worker)

    def celery(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"celery {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    ping = celery("inspect", "ping", "-d", node, "--timeout", "10")
    assert node in ping
    assert "pong" in ping
    registered = celery("inspect", "registered", "-d", node, "--timeout", "10")
    assert "provisioner.run_job" in registered
    queues = celery("inspect", "active_queues", "-d", node, "--timeout", "10")
    assert QUEUE in queues


class TaskEvents:
    """Celery task events as Flower receives them, captured on a thread."""

    def __init__(self, stack: Stack) -> None:
        self.app = create_app(stack.settings())
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._connection = self.app.connection_for_read()
        self._receiver = self.app.events.Receiver(self._connection, handlers={"*": self._on})
        self._thread = threading.Thread(target=self._capture, name="events", daemon=True)
        self.error: BaseException | None = None

    def _on(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def _capture(self) -> None:
        try:
            self._receiver.capture(limit=None, timeout=None, wakeup=False)
        except BaseException as exc:  # reported by the test, not lost on the thread
            self.error = exc

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["type"] == kind]

    def start(self) -> TaskEvents:
        self._thread.start()

        # Subscribed once a worker's answer to a heartbeat request comes back through it.
        def heard() -> bool:
            assert self.error is None, self.error
            self.app.control.heartbeat()
            return bool(self.of_type("worker-heartbeat"))

        wait_for(heard, timeout=20, interval=0.5, describe="a worker heartbeat event")
        return self

    def stop(self) -> None:
        self._receiver.should_stop = True
        self._thread.join(timeout=10)
        self._connection.release()
        self.app.close()


@pytest.fixture
def task_events(sqlite_stack: Stack) -> Iterator[TaskEvents]:
    sqlite_stack.start_worker(concurrency=2)
    events = TaskEvents(sqlite_stack).start()
    yield events
    events.stop()


def test_a_failed_job_is_a_failed_celery_task_acknowledged_and_not_retried(
    sqlite_stack: Stack, task_events: TaskEvents
) -> None:
    stack = sqlite_stack
    with stack.sandbox.client("other-team-key") as other:
        assert other.post("/api/v1/sites", json={"domain": "taken.example.com"}).status_code == 200
    failing = stack.submit(provision_request("taken.example.com"), key="evt-taken").job.id
    (fine,) = stack.submit_sites(["fine.example.com"])
    jobs = {j.id: j for j in stack.wait_done([failing, fine])}
    assert jobs[failing].status is JobStatus.failed
    assert jobs[fine].status is JobStatus.succeeded

    def task_of(job_id: str) -> str | None:
        received = [e for e in task_events.of_type("task-received") if job_id in e["args"]]
        return received[0]["uuid"] if received else None

    def ended(kind: str, job_id: str) -> list[dict[str, Any]]:
        task = task_of(job_id)
        return [e for e in task_events.of_type(kind) if e["uuid"] == task]

    (failed,) = wait_for(
        lambda: ended("task-failed", failing),
        timeout=15,
        describe=lambda: f"a task-failed event; got {[e['type'] for e in task_events.events]}",
    )
    assert "JobFailedError" in failed["exception"]
    assert f"job {failing} failed: domain_taken" in failed["exception"]
    wait_for(lambda: ended("task-succeeded", fine), timeout=15, describe="a task-succeeded event")
    assert not ended("task-succeeded", failing)
    # the publisher's task-sent events are on too (task_send_sent_event)
    assert any(failing in e.get("args", "") for e in task_events.of_type("task-sent"))

    # Acknowledged, not redelivered, not retried: nothing unacked or queued in the broker.
    with contextlib.closing(redis_client()) as redis:
        wait_for(
            lambda: (
                redis.hlen("unacked") == 0
                and sum(redis.llen(key) for key in redis.keys(f"{QUEUE}*")) == 0
            ),
            timeout=15,
            describe="the broker to hold no message",
        )
    assert len([e for e in task_events.of_type("task-received") if failing in e["args"]]) == 1
    assert not task_events.of_type("task-retried")
    assert stack.jobs([failing])[0].attempts == 1

    # Celery's own line for it, in the worker log: one line, no traceback.
    log = stack.workers[0].log_path.read_text(errors="replace")
    raised = [line for line in log.splitlines() if "raised expected" in line]
    assert len(raised) == 1
    assert failing in raised[0]
    assert "JobFailedError" in raised[0]
    assert "raised unexpected" not in log
