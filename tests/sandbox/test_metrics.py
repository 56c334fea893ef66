"""What operators see: Prometheus metrics moving as jobs run (the pipeline against the sandbox,
as tests/sandbox/test_service.py runs it), the quota gauges read at scrape time, the multiprocess
aggregate of a worker's processes, and a failed job as a failed Celery task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from testkit.databases import migrated_engine
from testkit.pipelines import make_pipeline, provision
from testkit.sandbox_process import REPO_ROOT, SandboxProcess
from worker import metrics
from worker.app import TASK_NAME, JobFailedError, create_app
from worker.jobs.db import make_engine
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.plausible import PlausibleClient
from worker.quota.report import Reporter
from worker.service import Pipeline
from worker.settings import Settings

POST_SITES = "POST /api/v1/sites"
PUT_GOALS = "PUT /api/v1/sites/goals"
PUT_LINKS = "PUT /api/v1/sites/shared-links"
GET_SITE = "GET /api/v1/sites/:site_id"
JOB = {"operation": "provision_site", "account": "default"}


def sample(name: str, **labels: str) -> float:
    """A sample of this process's default registry; 0 if never recorded."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Samples:
    """Samples now, to compare with later: the registry is shared by the whole test run."""

    def __init__(self, *wanted: tuple[str, dict[str, str]]) -> None:
        self.wanted = wanted
        self.before = [sample(name, **labels) for name, labels in wanted]

    def moved(self) -> list[float]:
        return [
            sample(name, **labels) - before
            for (name, labels), before in zip(self.wanted, self.before, strict=True)
        ]


def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``exposition()`` parsed: (sample name, sorted labels) -> value."""
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'jobs.db'}"))


@pytest.fixture
def pipeline(sandbox: SandboxProcess, store: JobStore) -> Iterator[Pipeline]:
    pipeline = make_pipeline(sandbox, store)
    yield pipeline
    pipeline.clients["default"].close()


def test_a_provisioned_job_counts_its_run_its_steps_and_its_requests(
    store: JobStore, pipeline: Pipeline
) -> None:
    samples = Samples(
        ("provisioner_jobs_total", {"status": "succeeded", **JOB}),
        ("provisioner_job_run_seconds_count", {"operation": "provision_site"}),
        ("provisioner_step_seconds_count", {"step": "site"}),
        ("provisioner_step_seconds_count", {"step": "goal"}),
        ("provisioner_step_seconds_count", {"step": "shared_link"}),
        ("provisioner_api_requests_total", {"route": POST_SITES, "status": "200"}),
        ("provisioner_api_requests_total", {"route": PUT_GOALS, "status": "200"}),
        ("provisioner_api_requests_total", {"route": PUT_LINKS, "status": "200"}),
        ("provisioner_api_request_seconds_count", {"route": POST_SITES}),
        ("provisioner_api_request_seconds_sum", {"route": POST_SITES}),
    )
    job = store.enqueue(provision()).job
    assert pipeline.run(job.id) is JobStatus.succeeded
    *counts, seconds = samples.moved()
    assert counts == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    assert 0 < seconds < 10


def test_a_failed_job_counts_by_code_and_routes_are_templates_not_domains(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    with sandbox.client("other-team-key") as other:
        assert other.post("/api/v1/sites", json={"domain": "shop.example.com"}).status_code == 200
    samples = Samples(
        ("provisioner_jobs_total", {"status": "failed", **JOB}),
        ("provisioner_job_errors_total", {"status": "failed", "code": "domain_taken"}),
        ("provisioner_api_requests_total", {"route": POST_SITES, "status": "400"}),
        ("provisioner_api_requests_total", {"route": GET_SITE, "status": "401"}),
    )
    job = store.enqueue(provision()).job
    assert pipeline.run(job.id) is JobStatus.failed
    assert samples.moved() == [1, 1, 1, 1]

    text = metrics.exposition()[0].decode()
    assert "shop.example.com" not in text
    assert "test-key" not in text
    assert "other-team-key" not in text
    routes = {labels["route"] for labels in _labels("provisioner_api_requests_total", text)}
    assert GET_SITE in routes
    assert all(" /api/v1/sites" in route for route in routes), routes


def _labels(name: str, text: str) -> list[dict[str, str]]:
    return [
        s.labels
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_transient_errors_count_their_retries_and_park_the_job(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    sandbox.configure(fail_rate=1.0)
    by_status_before = dict(sandbox.state()["counters"]["by_status"])
    samples = Samples(
        ("provisioner_jobs_total", {"status": "waiting", **JOB}),
        ("provisioner_job_errors_total", {"status": "waiting", "code": "server_error"}),
        ("provisioner_api_retries_total", {"code": "server_error"}),
    )
    job = store.enqueue(provision()).job
    assert pipeline.run(job.id) is JobStatus.waiting
    # max_attempts=3: one call, two retries, all answered 5xx
    assert samples.moved() == [1, 1, 2]
    by_status = sandbox.state()["counters"]["by_status"]
    (status,) = [s for s in by_status if by_status[s] != by_status_before.get(s, 0)]
    assert sample("provisioner_api_requests_total", route=POST_SITES, status=status) >= 3


def test_a_request_without_an_answer_is_counted_as_a_network_error(
    sandbox: SandboxProcess, store: JobStore, pipeline: Pipeline
) -> None:
    sandbox.configure(drop_rate=1.0)
    samples = Samples(
        ("provisioner_api_requests_total", {"route": POST_SITES, "status": "network_error"}),
        ("provisioner_api_retries_total", {"code": "network_error"}),
    )
    job = store.enqueue(provision()).job
    assert pipeline.run(job.id) is JobStatus.waiting
    assert samples.moved() == [3, 2]


def test_quota_waits_and_429s_are_counted_by_quota(
    sandbox: SandboxProcess, store: JobStore
) -> None:
    pipeline = make_pipeline(sandbox, store, burst_limit=2, burst_seconds=3600)
    samples = Samples(
        ("provisioner_quota_waits_total", {"quota": "default"}),
        ("provisioner_jobs_total", {"status": "requeued", **JOB}),
        ("provisioner_job_errors_total", {"status": "requeued", "code": "quota_wait"}),
    )
    job = store.enqueue(provision()).job  # 4 calls; the window holds 2
    assert pipeline.run(job.id) is JobStatus.queued
    assert samples.moved() == [1, 1, 1]
    pipeline.clients["default"].close()

    sandbox.configure(burst_limit=0, burst_seconds=60)  # someone else spent the team's quota
    pipeline = make_pipeline(sandbox, store)
    samples = Samples(
        ("provisioner_rate_limited_total", {"quota": "default", "limit": "burst"}),
        ("provisioner_job_errors_total", {"status": "requeued", "code": "rate_limited"}),
    )
    job = store.enqueue(provision("other.example.com")).job
    assert pipeline.run(job.id) is JobStatus.queued
    assert samples.moved() == [1, 1]
    pipeline.clients["default"].close()


@pytest.fixture
def quota_collector(store: JobStore, pipeline: Pipeline) -> Iterator[Reporter]:
    reporter = Reporter(store, pipeline.limiter, pipeline.accounts)
    metrics.register_quota_collector(reporter)
    yield reporter
    metrics.unregister_quota_collector()


def test_quota_gauges_are_read_from_the_status_table_at_scrape_time(
    store: JobStore, pipeline: Pipeline, quota_collector: Reporter
) -> None:
    hour = (("quota", "default"), ("window", "hour"))
    waiting = (("account", "default"), ("priority", "interactive"), ("quota", "default"))
    before = scraped()
    assert before[("provisioner_quota_collector_up", ())] == 1
    used_before = before[("provisioner_quota_used", hour)]

    assert pipeline.run(store.enqueue(provision()).job.id) is JobStatus.succeeded
    for n in range(2):
        store.enqueue(provision(f"later{n}.example.com"))
    after = scraped()
    assert after[("provisioner_quota_used", hour)] - used_before == 4  # site, 2 goals, a link
    assert after[("provisioner_quota_limit", hour)] == 10_000_000
    assert (
        after[("provisioner_quota_remaining", hour)]
        == 10_000_000 - after[("provisioner_quota_used", hour)]
    )
    assert after[("provisioner_quota_spent", hour)] == 0
    assert after[("provisioner_jobs_waiting", waiting)] == 2
    bulk = (("account", "default"), ("priority", "bulk"), ("quota", "default"))
    assert after[("provisioner_jobs_waiting", bulk)] == 0
    # the counters are in the same scrape
    assert (
        "provisioner_jobs_total",
        tuple(sorted({"status": "succeeded", **JOB}.items())),
    ) in after


def test_an_unreadable_status_table_costs_the_quota_gauges_not_the_scrape(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    empty = JobStore(make_engine(f"sqlite:///{tmp_path / 'empty.db'}"))  # no tables
    metrics.register_quota_collector(Reporter(empty, pipeline.limiter, pipeline.accounts))
    try:
        metrics.API_RETRIES.labels("probe").inc()
        after = scraped()
    finally:
        metrics.unregister_quota_collector()
    assert after[("provisioner_quota_collector_up", ())] == 0
    assert not any(name == "provisioner_quota_used" for name, _ in after)
    assert after[("provisioner_api_retries_total", (("code", "probe"),))] >= 1


def test_every_client_route_is_labelled_with_its_template() -> None:
    site = {
        "domain": "a.example.com",
        "timezone": "Etc/UTC",
        "custom_properties": [],
        "tracker_script_configuration": {},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=site if request.method != "DELETE" else {"deleted": True})

    client = PlausibleClient(
        base_url="https://plausible.test",
        api_key="route-key",
        transport=httpx.MockTransport(answer),
    )
    routes: dict[str, Callable[[], object]] = {
        "GET /api/v1/sites/:site_id": lambda: client.get_site("a.example.com"),
        "PUT /api/v1/sites/:site_id": lambda: client.update_site("a.example.com", domain="b.com"),
        "DELETE /api/v1/sites/:site_id": lambda: client.delete_site("a.example.com"),
        "DELETE /api/v1/sites/goals/:goal_id": lambda: client.delete_goal("a.example.com", 7),
        "DELETE /api/v1/sites/guests/:email": lambda: client.delete_guest("a.example.com", "x@y.z"),
        "DELETE /api/v1/sites/custom-props/*property": lambda: client.delete_custom_prop(
            "a.example.com", "a/b"
        ),
    }
    with client:
        for route, call in routes.items():
            before = sample("provisioner_api_requests_total", route=route, status="200")
            call()
            assert sample("provisioner_api_requests_total", route=route, status="200") == before + 1
    text = metrics.exposition()[0].decode()
    assert "a.example.com" not in text
    assert "x@y.z" not in text
    assert "route-key" not in text


#: A worker's main process in miniature: prometheus_client imported before multiprocess mode is
#: on, two forked children (the pool) and a spawned one (the sweeper) recording, the parent
#: recording nothing and rendering the sum.
_MULTIPROCESS_SCRIPT = """
import json, multiprocessing, os, sys
from worker import metrics

def sweeper():
    from worker import metrics
    metrics.SCHEDULER_JOBS.labels("dispatched").inc(3)

if __name__ == "__main__":
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    path = metrics.enable_multiprocess()
    for n in range(2):
        pid = os.fork()
        if pid == 0:
            metrics.JOBS.labels("succeeded", "provision_site", "default").inc()
            metrics.API_REQUESTS.labels("POST /api/v1/sites", "200").inc(n + 1)
            metrics.API_REQUEST_SECONDS.labels("POST /api/v1/sites").observe(0.2)
            os._exit(0)
        os.waitpid(pid, 0)
        metrics.mark_process_dead(pid)
    spawned = multiprocessing.get_context("spawn").Process(target=sweeper)
    spawned.start()
    spawned.join()
    body = metrics.exposition()[0].decode()
    metrics.disable_multiprocess(path)
    print(json.dumps({"body": body, "dir_left": os.path.exists(path)}))
"""


def test_multiprocess_exposition_sums_the_processes_of_a_worker(tmp_path: Path) -> None:
    script = tmp_path / "worker_like.py"
    script.write_text(_MULTIPROCESS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_ENV}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(out["body"])
        for s in family.samples
    }
    job = tuple(sorted({"status": "succeeded", **JOB}.items()))
    post = (("route", "POST /api/v1/sites"),)
    assert values[("provisioner_jobs_total", job)] == 2
    assert values[("provisioner_api_requests_total", (*post, ("status", "200")))] == 3
    assert values[("provisioner_api_request_seconds_count", post)] == 2
    assert values[("provisioner_scheduler_jobs_total", (("action", "dispatched"),))] == 3
    assert out["dir_left"] is False


def test_a_failed_job_is_a_failed_celery_task_and_a_done_one_is_not(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'celery.db'}"
    store = JobStore(migrated_engine(url))
    settings = Settings(
        database_url=url,
        plausible_api_key=SecretStr("test-key"),
        plausible_base_url=sandbox.base_url,
        hourly_limit=10_000_000,
        burst_limit=10_000_000,
    )
    app = create_app(settings)
    assert app.conf.worker_send_task_events
    assert app.conf.task_send_sent_event
    assert app.conf.task_acks_late
    assert app.conf.task_acks_on_failure_or_timeout
    task = app.tasks[TASK_NAME]

    with sandbox.client("other-team-key") as other:
        assert other.post("/api/v1/sites", json={"domain": "taken.example.com"}).status_code == 200
    failing = store.enqueue(provision("taken.example.com")).job
    result = task.apply(args=(failing.id,))
    assert result.state == "FAILURE"
    error = result.result
    assert isinstance(error, JobFailedError)
    assert (error.job_id, error.code) == (failing.id, "domain_taken")
    assert str(error) == f"job {failing.id} failed: domain_taken"
    row = store.get(failing.id)
    assert row is not None
    assert row.status is JobStatus.failed
    assert row.attempts == 1

    done = store.enqueue(provision("fine.example.com")).job
    result = task.apply(args=(done.id,))
    assert (result.state, result.result) == ("SUCCESS", "succeeded")
    again = task.apply(args=(failing.id,))  # a redelivery finds nothing to claim
    assert (again.state, again.result) == ("SUCCESS", None)


def test_job_failed_error_survives_pickling_between_pool_and_main_process() -> None:
    import pickle

    copy = pickle.loads(pickle.dumps(JobFailedError("job-1", "domain_taken")))
    assert (copy.job_id, copy.code, str(copy)) == (
        "job-1",
        "domain_taken",
        "job job-1 failed: domain_taken",
    )


_OWNER_SCRIPT = """
import os, sys
from worker import metrics

path = metrics.enable_multiprocess(root=sys.argv[1])
metrics.JOBS.labels("succeeded", "provision_site", "default").inc()
print(path, flush=True)
if sys.argv[2] == "killed":
    os._exit(0)  # no clean-up, as after SIGKILL
sys.stdin.readline()
metrics.disable_multiprocess(path)
"""


def test_directories_of_dead_workers_are_removed_and_those_of_live_ones_kept(
    tmp_path: Path,
) -> None:
    script = tmp_path / "owner.py"
    script.write_text(_OWNER_SCRIPT)
    root = tmp_path / "tmp"
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_ENV}
    env["PYTHONPATH"] = str(REPO_ROOT)
    command = [sys.executable, str(script), str(root)]
    live = subprocess.Popen(
        [*command, "running"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert live.stdout is not None
        assert live.stdin is not None
        running = live.stdout.readline().strip()
        # another worker starting meanwhile leaves the live one's directory alone
        dead = subprocess.run(
            [*command, "killed"], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
        assert list(Path(dead).glob("counter_*.db")), "the dead worker left its samples"
        assert sorted(p.name for p in root.iterdir()) == sorted(
            [Path(dead).name, Path(running).name]
        )
        assert metrics.remove_abandoned(str(root)) == [dead]
        assert [p.name for p in root.iterdir()] == [Path(running).name]
        live.stdin.write("\n")
        live.stdin.close()
        assert live.wait(timeout=30) == 0
    finally:
        live.kill()
    assert list(root.iterdir()) == []  # a worker that shuts down removes its own
