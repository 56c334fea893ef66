"""Real ``provision worker`` processes, a real broker, a real status table and the sandbox over
HTTP, as one ``Stack`` a test or a benchmark drives.

Every worker runs as a subprocess in its own process group and is killed whole at the end.
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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlmodel import Session, select

from producers.events import parse_event
from testkit.databases import migrated_engine
from testkit.sandbox_process import REPO_ROOT, SandboxProcess
from testkit.waiting import wait_for
from worker.jobs.intake import Enqueued
from worker.jobs.models import ProvisioningJob
from worker.jobs.specs import JobRequest
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.settings import Settings
from worker.wakeups import announcer, transport_for

T = TypeVar("T")


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
        if self.prefork:
            # The pool children are forked right before "ready"; make sure they exist.
            wait_for(lambda: len(self.pool_pids()) > 0, timeout=10, describe="pool processes")
        return self

    @property
    def prefork(self) -> bool:
        """Named on the command line, or by the settings (``worker_pool``)."""
        named = self.args[self.args.index("--pool") + 1] if "--pool" in self.args else None
        return (named or self.env.get("PROVISIONER_WORKER_POOL")) == "prefork"

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
        # Enqueueing wakes the workers' schedulers, as a producer's store does (make_store).
        self.store.announce = (
            announcer(transport_for(broker_url, database_url)) or self.store.announce
        )
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
        pool: str | None = None,
        api_key: str | None = None,
        wait: bool = True,
        extra_env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        **settings: Any,
    ) -> WorkerProcess:
        """``pool`` is the product's default (``worker_pool``) unless given: ``prefork`` for a
        test that kills the pool's children. ``prefix`` runs the worker through a command
        (``unshare --pid --fork``: as if on another host)."""
        name = f"w{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}"
        args = [
            *prefix,
            *PROVISION,
            "worker",
            *(["--pool", pool] if pool else []),
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
