"""Integration tier: real ``provision worker`` processes, a real broker, a real status table, and
the sandbox over HTTP.

Every test starts its own worker(s) as subprocesses in their own process group and kills the
whole group at teardown. Brokers and databases are isolated per test: Redis db 15 is flushed
before and after (only if it is empty or marked as the tests'; see ``tests.owned``), PostgreSQL
gets a fresh database that is dropped afterwards, SQLite lives in
``tmp_path``.

A service that is not running skips its tests locally with the reason; with ``CI`` set in the
environment it fails them instead, so CI can never go green by skipping.

Conditions are awaited by polling the status table (or the sandbox) against a deadline; nothing
sleeps to "let things happen".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from producers.events import parse_event
from tests.databases import migrated_engine
from tests.owned import flush_owned
from tests.sandbox_process import REPO_ROOT, SandboxProcess
from tests.waiting import wait_for
from worker.jobs.intake import Enqueued
from worker.jobs.models import ProvisioningJob
from worker.jobs.specs import JobRequest
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.settings import Settings

T = TypeVar("T")

REDIS_URL = os.environ.get("PROVISIONER_IT_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "PROVISIONER_IT_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("PROVISIONER_IT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

#: The ``provision`` console script, run from this interpreter (``provision.cli:main``).
PROVISION = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'provision'; from provision.cli import main; main()",
]

#: Worker settings scaled down so crashes, leases and re-drives play out in seconds.
#: lease > hard time limit > soft time limit, as in production.
FAST_SETTINGS: dict[str, Any] = {
    "lease_seconds": 5,
    "task_time_limit": 4,
    "task_soft_time_limit": 3,
    "job_time_budget_seconds": 2,
    "sweep_interval_seconds": 0.5,
    "schedule_interval_seconds": 0.1,
    "redispatch_after_seconds": 3,
    "job_backoff_base_seconds": 0.5,
    "job_backoff_max_seconds": 2,
    "http_backoff_initial": 0.05,
    "http_backoff_max": 0.3,
    "http_read_timeout": 3,
}
#: Limits so high neither the sandbox nor the provisioner's own limiter hold back a test that is
#: not about the quota (tests about it set both sides' limits).
NO_LIMITS = {"hourly_limit": 10_000_000, "burst_limit": 10_000_000}
FAST_SETTINGS.update(NO_LIMITS)

DEFAULT_GOALS = (
    {"goal_type": "event", "event_name": "Signup"},
    {"goal_type": "page", "page_path": "/pricing"},
)
DEFAULT_LINKS = ("Client dashboard",)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: real worker processes, broker, database and sandbox"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


# -- services --------------------------------------------------------------------------------


def unavailable(service: str, reason: str) -> None:
    message = f"{service} is not available ({reason})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the whole integration tier", pytrace=False)
    pytest.skip(message)


_service_errors: dict[str, str | None] = {}


def _check(service: str, probe: Callable[[], None]) -> None:
    if service not in _service_errors:
        try:
            probe()
            _service_errors[service] = None
        except Exception as exc:
            _service_errors[service] = f"{type(exc).__name__}: {exc}"
    error = _service_errors[service]
    if error is not None:
        unavailable(service, error)


def _redis_client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


def _probe_redis() -> None:
    with contextlib.closing(_redis_client()) as client:
        client.ping()


def _pg_admin() -> Any:
    import psycopg

    url = make_url(POSTGRES_URL)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database,
        autocommit=True,
        connect_timeout=3,
    )


def _probe_postgres() -> None:
    with _pg_admin() as conn:
        conn.execute("SELECT 1")


def _probe_rabbitmq() -> None:
    from kombu import Connection

    with Connection(AMQP_URL, connect_timeout=3) as conn:
        conn.ensure_connection(max_retries=1)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The Redis broker on a dedicated db, flushed before and after the test."""
    _check("Redis", _probe_redis)
    with contextlib.closing(_redis_client()) as client:
        flush_owned(client, setting="PROVISIONER_IT_REDIS_URL")
        yield REDIS_URL
        flush_owned(client, setting="PROVISIONER_IT_REDIS_URL")


@pytest.fixture
def flush_broker(redis_url: str) -> Callable[[], int]:
    """FLUSHDB on the broker db; returns how many keys were there."""

    def flush() -> int:
        with contextlib.closing(_redis_client()) as client:
            return flush_owned(client, setting="PROVISIONER_IT_REDIS_URL")

    return flush


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """RabbitMQ, with the provisioner queue purged before and deleted after the test."""
    _check("RabbitMQ", _probe_rabbitmq)
    from kombu import Connection

    def drop_queue() -> None:
        with Connection(AMQP_URL) as conn, contextlib.suppress(Exception):
            conn.default_channel.queue_delete("provisioner")

    drop_queue()
    yield AMQP_URL
    drop_queue()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    _check("PostgreSQL", _probe_postgres)
    name = f"provisioner_it_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The status table, on each supported store in turn."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


# -- waiting ---------------------------------------------------------------------------------


# -- worker processes ------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _is_spawned(pid: int) -> bool:
    try:
        return b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class WorkerProcess:
    """One ``provision worker`` in its own process group, logging to a file."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.args = list(args)
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self) -> WorkerProcess:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                pytest.fail(f"worker exited during start-up:\n{self.log_tail()}", pytrace=False)
            text = self.log_path.read_bytes()[self._log_offset :].decode(errors="replace")
            return " ready." in text and "sweeper started" in text

        wait_for(ready, timeout=timeout, describe=lambda: f"worker start-up\n{self.log_tail()}")
        # The pool children are forked right before "ready"; make sure they exist.
        wait_for(lambda: len(self.pool_pids()) > 0, timeout=10, describe="pool processes")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pool_pids(self) -> list[int]:
        """The pool children; the worker's spawned sweeper process is not one of them."""
        if not self.alive():
            return []
        return [pid for pid in _children(self.pid) if not _is_spawned(pid)]

    def kill_pool(self) -> list[int]:
        """SIGKILL every pool child (the main process survives and forks new ones)."""
        pids = self.pool_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def kill(self) -> None:
        """SIGKILL the whole process group: main process, pool children, everything."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


# -- the stack under test --------------------------------------------------------------------


def provision_event(
    domain: str,
    *,
    key: str | None = None,
    goals: Iterable[dict[str, Any]] = DEFAULT_GOALS,
    links: Iterable[str] = DEFAULT_LINKS,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "site.provision",
        "domain": domain,
        "timezone": "Europe/Berlin",
        "goals": list(goals),
        "shared_links": list(links),
    }
    if key is not None:
        event["id"] = key
    return event


def provision_request(domain: str, **kwargs: Any) -> JobRequest:
    return parse_event(provision_event(domain, **kwargs)).request


class Stack:
    """Sandbox + broker + status table + worker processes, wired the way production wires them."""

    def __init__(
        self, sandbox: SandboxProcess, broker_url: str, database_url: str, workdir: Path
    ) -> None:
        self.sandbox = sandbox
        self.broker_url = broker_url
        self.database_url = database_url
        self.workdir = workdir
        self.workers: list[WorkerProcess] = []
        # The table exists before any worker starts, so workers never race to create it.
        self.engine = migrated_engine(database_url)
        self.store = JobStore(self.engine)
        self._app: Any = None
        self._dispatcher: Any = None

    # settings and environment

    def settings(self, **overrides: Any) -> Settings:
        values = {**FAST_SETTINGS, **overrides}
        return Settings(
            database_url=self.database_url,
            broker_url=self.broker_url,
            plausible_api_key=values.pop("api_key", self.sandbox.api_key),
            plausible_base_url=self.sandbox.base_url,
            **values,
        )

    def env(
        self, *, api_key: str | None = None, extra: dict[str, str] | None = None, **overrides: Any
    ) -> dict[str, str]:
        """A worker's environment: ``overrides`` are settings (``PROVISIONER_`` + the name in
        capitals), ``extra`` other variables (an account's API key)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
        env.pop("PLAUSIBLE_API_KEY", None)
        env.update(
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(REPO_ROOT),
            PROVISIONER_BROKER_URL=self.broker_url,
            PROVISIONER_DATABASE_URL=self.database_url,
            PLAUSIBLE_API_KEY=api_key or self.sandbox.api_key,
            PLAUSIBLE_BASE_URL=self.sandbox.base_url,
        )
        for name, value in {**FAST_SETTINGS, **overrides}.items():
            env[f"PROVISIONER_{name.upper()}"] = str(value)
        env.update(extra or {})
        return env

    # workers

    def start_worker(
        self,
        *,
        concurrency: int = 2,
        pool: str = "prefork",
        api_key: str | None = None,
        wait: bool = True,
        extra_env: dict[str, str] | None = None,
        **settings: Any,
    ) -> WorkerProcess:
        name = f"w{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}"
        args = [
            *PROVISION,
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}@%h",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ]
        worker = WorkerProcess(
            args,
            self.env(api_key=api_key, extra=extra_env, **settings),
            self.workdir / f"{name}.log",
        )
        self.workers.append(worker)
        worker.start()
        return worker.wait_ready() if wait else worker

    def restart(self, worker: WorkerProcess) -> WorkerProcess:
        worker.kill()
        return worker.start().wait_ready()

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log_tail(40)}" for w in self.workers)

    # producers

    @property
    def dispatcher(self) -> Any:
        if self._dispatcher is None:
            from worker.app import CeleryDispatcher, create_app

            self._app = create_app(self.settings())
            self._dispatcher = CeleryDispatcher(self._app)
        return self._dispatcher

    def submit(self, request: JobRequest, *, key: str | None = None) -> Enqueued:
        """Enqueue as a producer does: the row only; the workers' schedulers dispatch it."""
        return self.store.enqueue(request, key=key)

    def schedule(self) -> list[str]:
        """One scheduler tick from this process, as a worker's would run: the jobs that fit in
        the quota are published to the broker."""
        from worker.runtime import make_scheduler

        return make_scheduler(self.settings(), self.store, self.dispatcher).tick()

    def submit_sites(self, domains: Iterable[str], **kwargs: Any) -> list[str]:
        return [
            self.submit(provision_request(d, **kwargs), key=f"signup-{d}").job.id for d in domains
        ]

    def provision_cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PROVISION, *args],
            cwd=REPO_ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # the status table

    def jobs(self, ids: Iterable[str] | None = None) -> list[ProvisioningJob]:
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(ProvisioningJob)
            if ids is not None:
                query = query.where(ProvisioningJob.id.in_(list(ids)))  # type: ignore[attr-defined]
            return list(session.exec(query).all())

    def status_counts(self, ids: Iterable[str] | None = None) -> Counter[str]:
        return Counter(job.status.value for job in self.jobs(ids))

    def wait_done(self, ids: Sequence[str], *, timeout: float = 45) -> list[ProvisioningJob]:
        """Every job in a final state; returns them."""

        def done() -> list[ProvisioningJob] | None:
            jobs = self.jobs(ids)
            return jobs if len(jobs) == len(ids) and all(j.status.done for j in jobs) else None

        return wait_for(
            done,
            timeout=timeout,
            interval=0.2,
            describe=lambda: (
                f"{len(ids)} jobs to finish; statuses {dict(self.status_counts(ids))}\n{self.logs()}"
            ),
        )

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        if self._app is not None:
            with contextlib.suppress(Exception):
                self._app.close()
        self.engine.dispose()


@pytest.fixture
def make_stack(sandbox: SandboxProcess, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Build a Stack on a given broker and status table; torn down (workers SIGKILLed) after.

    Request the broker and database fixtures *before* this one, so the workers are killed before
    their broker is flushed or their database dropped."""
    stacks: list[Stack] = []

    def make(broker_url: str, database_url: str, *, on: SandboxProcess | None = None) -> Stack:
        box = on or sandbox
        box.configure(**NO_LIMITS)
        stack = Stack(box, broker_url, database_url, tmp_path)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture
def stack(redis_url: str, database_url: str, make_stack: Callable[..., Stack]) -> Stack:
    """Redis broker, parametrised over the SQLite and PostgreSQL stores."""
    return make_stack(redis_url, database_url)


@pytest.fixture
def sqlite_stack(redis_url: str, sqlite_url: str, make_stack: Callable[..., Stack]) -> Stack:
    """Redis broker and a SQLite store, for tests where the store makes no difference."""
    return make_stack(redis_url, sqlite_url)


# -- assertions on the sandbox ---------------------------------------------------------------


def natural_key(goal: dict[str, Any]) -> str:
    if goal["goal_type"] == "event":
        return f"event:{goal['event_name']}"
    return f"page:{goal['page_path']}"


def assert_provisioned_once(
    state: dict[str, Any],
    jobs: Sequence[ProvisioningJob],
) -> None:
    """The sandbox holds exactly the sites, goals and shared links the succeeded jobs asked for,
    each exactly once, and the status table's records match what the sandbox holds."""
    expected_sites = Counter(job.domain for job in jobs)
    assert all(n == 1 for n in expected_sites.values()), "test bug: one job per domain expected"
    sites = Counter(site["domain"] for site in state["sites"])
    duplicated = {d: n for d, n in sites.items() if n != 1}
    assert not duplicated, f"sites held more than once: {duplicated}"
    assert set(sites) == set(expected_sites), (
        f"missing sites {sorted(set(expected_sites) - set(sites))}, "
        f"unexpected sites {sorted(set(sites) - set(expected_sites))}"
    )

    goals = Counter((g["domain"], natural_key(g)) for g in state["goals"])
    duplicated_goals = {k: n for k, n in goals.items() if n != 1}
    assert not duplicated_goals, f"goals held more than once: {duplicated_goals}"
    goal_ids = {(g["domain"], natural_key(g)): g["id"] for g in state["goals"]}
    links = {
        s["domain"]: Counter(link["name"] for link in s["shared_links"]) for s in state["sites"]
    }

    expected_goals = set()
    for job in jobs:
        spec = job.spec
        for goal in spec.goals:
            expected_goals.add((job.domain, goal.natural_key))
            recorded = job.progress.goals[goal.natural_key].id
            assert recorded == goal_ids.get((job.domain, goal.natural_key)), (
                f"{job.domain}: status table records goal {goal.natural_key} as #{recorded}, "
                f"the sandbox holds #{goal_ids.get((job.domain, goal.natural_key))}"
            )
        assert links[job.domain] == Counter(spec.shared_links), (
            f"{job.domain}: shared links {dict(links[job.domain])}, expected {spec.shared_links}"
        )
        assert set(job.progress.shared_links) == set(spec.shared_links)
    assert set(goals) == expected_goals, (
        f"missing goals {expected_goals - set(goals)}, unexpected {set(goals) - expected_goals}"
    )


def assert_all_succeeded(jobs: Sequence[ProvisioningJob]) -> None:
    bad = [
        (j.domain, j.status.value, j.error_code, j.error_message)
        for j in jobs
        if j.status != JobStatus.succeeded
    ]
    assert not bad, f"jobs not succeeded: {bad}"


def write_jsonl(path: Path, events: Iterable[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path
