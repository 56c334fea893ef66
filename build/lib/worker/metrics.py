"""Prometheus metrics of the provisioner, recorded where things happen.

``exposition()`` renders what this process (and, in multiprocess mode, every worker process of
this host) has recorded, in the text format, with its content type; ``provision serve`` answers
``GET /metrics`` with it, and a worker serves the same on ``PROVISIONER_METRICS_PORT``.

Counters and histograms are recorded by the code that does the work: the pipeline (jobs, steps),
the API client (requests), the retry policy (in-process retries), a job's permits (quota waits,
429s) and the sweeper. Gauges of the quota and of the jobs waiting for it are read from the
status database at scrape time (``register_quota_collector``), so they are right whichever
process spent the quota.

Multiprocess mode: a Celery worker runs jobs in prefork children. Its main process calls
``enable_multiprocess()`` before the pool forks; every process then writes its samples to files
in ``PROMETHEUS_MULTIPROC_DIR`` and ``exposition()`` sums them. Embedded mode and
``provision serve`` run in one process and use the default registry.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from worker.quota.report import Reporter

log = logging.getLogger(__name__)

#: The variable prometheus_client reads to find the multiprocess directory.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# ``*_created`` series double every counter's output for nothing Prometheus needs.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Every metric below has labels, so none holds a value until its first ``.labels()``. That is
# what lets a worker's main process switch to multiprocess mode after this module is imported:
# values are made after the switch, in the processes that record them.

_API_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
_JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

JOBS = Counter(
    "provisioner_jobs",
    "Job runs ended, by how: succeeded, failed, requeued (for quota), waiting (parked after a "
    "transient error), lease_lost, interrupted (the run raised; the sweeper re-drives it).",
    ["status", "operation", "account"],
)
JOB_ERRORS = Counter(
    "provisioner_job_errors",
    "Job runs that did not succeed, by status and error code.",
    ["status", "code"],
)
JOB_RUN_SECONDS = Histogram(
    "provisioner_job_run_seconds",
    "Duration of one run of a job, from its claim to its new status.",
    ["operation"],
    buckets=_JOB_BUCKETS,
)
STEP_SECONDS = Histogram(
    "provisioner_step_seconds",
    "Duration of a finished step (site, goal, shared_link, delete), retries included.",
    ["step"],
    buckets=_API_BUCKETS,
)
API_REQUESTS = Counter(
    "provisioner_api_requests",
    "Requests sent to the Plausible Sites API, by route template and HTTP status "
    "(network_error or timeout when no response came).",
    ["route", "status"],
)
API_REQUEST_SECONDS = Histogram(
    "provisioner_api_request_seconds",
    "Duration of one request to the Plausible Sites API, response body included.",
    ["route"],
    buckets=_API_BUCKETS,
)
API_RETRIES = Counter(
    "provisioner_api_retries",
    "In-process retries of an API call after a transient error, by error code.",
    ["code"],
)
RATE_LIMITED = Counter(
    "provisioner_rate_limited",
    "429 answers from Plausible, by quota and the limit it named (hourly or burst).",
    ["quota", "limit"],
)
QUOTA_WAITS = Counter(
    "provisioner_quota_waits",
    "Jobs handed back to the scheduler because the quota had no room (nothing was sent).",
    ["quota"],
)
SCHEDULER_JOBS = Counter(
    "provisioner_scheduler_jobs",
    "Jobs the scheduler dispatched, and the sweeper handed back (requeued) or published again "
    "(redispatched).",
    ["action"],
)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Time a step; only a step that finishes is observed."""
    started = time.monotonic()
    yield
    STEP_SECONDS.labels(step=name).observe(time.monotonic() - started)


# -- scrape-time gauges ----------------------------------------------------------------------


class QuotaCollector:
    """The quota's windows and the jobs waiting for it, read from the status database when
    scraped. A database that cannot be read costs the scrape these gauges, not the scrape."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        used, remaining, limit, spent, waiting, up = families
        try:
            quotas = self.reporter.quotas()
        except Exception as exc:
            log.warning("metrics: cannot read the quota: %s", type(exc).__name__)
            up.add_metric([], 0)
            return [up]
        for quota in quotas:
            for window in quota["windows"]:
                labels = [quota["quota"], window["kind"]]
                used.add_metric(labels, window["used"])
                remaining.add_metric(labels, window["remaining"])
                limit.add_metric(labels, window["limit"])
                spent.add_metric(labels, 1 if window["spent"] else 0)
            for account in quota["accounts"]:
                for priority, n in account["waiting"].items():
                    waiting.add_metric([quota["quota"], account["name"], priority], n)
        up.add_metric([], 1)
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        window = ["quota", "window"]
        return [
            GaugeMetricFamily(
                "provisioner_quota_used", "Calls charged to the current window.", labels=window
            ),
            GaugeMetricFamily(
                "provisioner_quota_remaining",
                "Calls left in the current window (0 once a 429 marked it spent).",
                labels=window,
            ),
            GaugeMetricFamily(
                "provisioner_quota_limit", "Calls the current window allows.", labels=window
            ),
            GaugeMetricFamily(
                "provisioner_quota_spent",
                "1 while a 429 marks the current window spent for every process.",
                labels=window,
            ),
            GaugeMetricFamily(
                "provisioner_jobs_waiting",
                "Queued jobs waiting for the scheduler, by quota, account and class.",
                labels=["quota", "account", "priority"],
            ),
            GaugeMetricFamily(
                "provisioner_quota_collector_up",
                "1 if the quota gauges could be read from the status database at this scrape.",
            ),
        ]


_quota_collector: QuotaCollector | None = None


def register_quota_collector(reporter: Reporter) -> QuotaCollector:
    """Serve the quota gauges from ``reporter`` in ``exposition()`` (and a worker's metrics
    port). One per process: a second call replaces the first."""
    global _quota_collector
    _quota_collector = QuotaCollector(reporter)
    return _quota_collector


def unregister_quota_collector() -> None:
    global _quota_collector
    _quota_collector = None


# -- exposition ------------------------------------------------------------------------------


class _Everything:
    """What a scrape sees: the multiprocess aggregate when ``PROMETHEUS_MULTIPROC_DIR`` is set,
    else this process's default registry; plus the scrape-time gauges."""

    def collect(self) -> Iterable[Metric]:
        path = os.environ.get(MULTIPROC_ENV)
        if path:
            aggregate = CollectorRegistry()
            multiprocess.MultiProcessCollector(aggregate, path)  # type: ignore[no-untyped-call]
            yield from aggregate.collect()
        else:
            yield from REGISTRY.collect()
        collector = _quota_collector
        if collector is not None:
            yield from collector.collect()


def exposition() -> tuple[bytes, str]:
    return generate_latest(_Everything()), CONTENT_TYPE_LATEST


class MetricsServer:
    """``exposition()`` over HTTP on a port of its own, from a daemon thread."""

    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:
        server: WSGIServer
        server, self._thread = start_http_server(port, addr, registry=_Everything())
        self._server = server
        self.port = int(server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(port: int, addr: str = "0.0.0.0") -> MetricsServer | None:
    """Start serving on ``port``; None (logged) when it cannot be bound, so a busy port costs
    the metrics, not the worker."""
    try:
        server = MetricsServer(port, addr)
    except OSError as exc:
        log.error("metrics: cannot serve on port %d: %s; metrics are off", port, exc.strerror)
        return None
    log.info("metrics: serving /metrics on port %d", server.port)
    return server


# -- multiprocess mode -----------------------------------------------------------------------


#: Multiprocess directories are named so; each holds a lock file its worker keeps locked.
DIR_PREFIX = "provisioner-metrics-"
_OWNER = ".owner"
_owners: dict[str, IO[str]] = {}


def enable_multiprocess(root: str | None = None) -> str:
    """Record every later sample in files of a fresh directory under ``root`` (the temporary
    directory), shared by the processes forked or spawned from here on (they inherit the
    variable). Call before any metric is used; directories of dead workers are removed first."""
    root = root or tempfile.gettempdir()
    remove_abandoned(root)
    # Locked before it gets the name other workers look for, so none can take it for abandoned.
    staging = tempfile.mkdtemp(prefix="." + DIR_PREFIX, dir=root)
    owner = open(os.path.join(staging, _OWNER), "w")  # noqa: SIM115 (held until disabled)
    fcntl.flock(owner, fcntl.LOCK_EX)
    path = os.path.join(root, os.path.basename(staging)[1:])
    os.rename(staging, path)
    _owners[path] = owner
    os.environ[MULTIPROC_ENV] = path
    # prometheus_client picks its value class when first imported; this process imported it
    # before the variable was set. Labelled metrics make their values on first use, so
    # swapping the class now reaches every value made from here on.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    used = [m for m in _ALL if m._metrics]
    if used:
        log.warning("metrics used before multiprocess mode; not aggregated: %s", used)
    return path


def disable_multiprocess(path: str) -> None:
    """Forget the directory of ``enable_multiprocess`` (the worker is shutting down)."""
    if os.environ.get(MULTIPROC_ENV) == path:
        del os.environ[MULTIPROC_ENV]
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    shutil.rmtree(path, ignore_errors=True)
    owner = _owners.pop(path, None)
    if owner is not None:
        owner.close()


def remove_abandoned(root: str) -> list[str]:
    """Remove the multiprocess directories under ``root`` whose worker is gone (killed before
    it could clean up): the kernel released their lock when the last process holding it died,
    pool children included. Returns the directories removed."""
    removed = []
    for path in glob.glob(os.path.join(root, DIR_PREFIX + "*")):
        try:
            with open(os.path.join(path, _OWNER)) as owner:
                fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        except OSError:
            continue  # held (a live worker), or not ours
    return removed


def mark_process_dead(pid: int) -> None:
    """A pool child exited: drop its live gauges (counters and histograms stay summed)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


_ALL: list[Any] = [
    JOBS,
    JOB_ERRORS,
    JOB_RUN_SECONDS,
    STEP_SECONDS,
    API_REQUESTS,
    API_REQUEST_SECONDS,
    API_RETRIES,
    RATE_LIMITED,
    QUOTA_WAITS,
    SCHEDULER_JOBS,
]
