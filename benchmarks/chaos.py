"""The chaos runner: the real system under the faults production meets, checked against the API.

    python benchmarks/chaos.py                 # every scenario at full size (about 15 minutes)
    python benchmarks/chaos.py --short         # the CI version: the same faults, fewer jobs
    python benchmarks/chaos.py --only sigkill,pg_restart --json chaos.json

It starts a private Redis (the broker, and the stream) and a private PostgreSQL (the status
table) on free ports, so the machine's shared services are never touched, plus the sandbox over
HTTP. Each scenario gets a fresh database, an empty broker and a reset sandbox, runs real
``provision worker`` processes (and, for the producers scenario, ``provision serve``,
``provision consume`` and ``provision import``), injects its faults, waits for every job to
finish, then compares the sandbox's state with the status table.

Full runs use the production timings (10 s leases, a 60 s time budget); ``--short`` uses the
integration tier's scaled-down ones so the same faults play out in seconds.

Columns: ``resume`` the longest wait for a job to finish once a restarted or flushed service
was back; ``lost`` jobs not finished by the deadline plus sites, goals or links a succeeded job
recorded that the API does not hold (or a delete that left its object); ``dup`` objects the API
holds more than once, and jobs beyond one per event; ``bad fail`` jobs failed that should have
succeeded (every scenario's jobs should); ``429`` refused calls our workers made; ``extra``
calls beyond the fewest the jobs needed (retries after faults, adoption lookups); ``redeliv``
broker messages beyond one per job; ``takeover`` the longest time from a SIGKILL until every job
it interrupted ran again under a new claim (or had finished); ``stall`` the longest time no job finished while some were
unfinished; ``wall`` from the first job to the last.

Exit status 1 when a target is missed: anything lost, duplicated or wrongly failed, a takeover
over 15 s, a stall over 10 s after an outage, more than 2% extra deliveries without faults.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from producers.events import parse_event
from testkit.private_services import PrivatePostgres, PrivateRedis, free_port
from testkit.sandbox_process import REPO_ROOT, SandboxProcess
from testkit.workers import (
    FAST_SETTINGS,
    NO_LIMITS,
    PROVISION,
    Stack,
    WorkerProcess,
    natural_key,
    provision_event,
)
from worker.jobs.models import ProvisioningJob
from worker.jobs.specs import JobRequest
from worker.jobs.states import JobStatus, Operation
from worker.settings import Settings

TAKEOVER_TARGET = 15.0
RESUME_TARGET = 10.0
REDELIVERY_TARGET = 0.02
TOKEN = "chaos-token"
#: The production timings, in place of the integration tier's scaled-down ones.
PRODUCTION = {
    name: Settings.model_fields[name].default for name in FAST_SETTINGS if name not in NO_LIMITS
}


@dataclass
class Result:
    scenario: str
    jobs: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicated: int = 0
    wrongly_failed: int = 0
    rate_limited: int = 0
    extra_calls: int = 0
    redeliveries: int = 0
    takeover: float | None = None
    #: When the fault ended (epoch seconds), for ``resume``.
    back: float | None = None
    resume: float | None = None
    stall: float = 0.0
    wall: float = 0.0
    faults: str = ""
    problems: list[str] = field(default_factory=list)

    def missed(self, *, faults: bool) -> list[str]:
        missed = list(self.problems)
        if self.lost:
            missed.append(f"{self.lost} lost")
        if self.duplicated:
            missed.append(f"{self.duplicated} duplicated")
        if self.wrongly_failed:
            missed.append(f"{self.wrongly_failed} failed that should have succeeded")
        if self.takeover is not None and self.takeover > TAKEOVER_TARGET:
            missed.append(f"takeover {self.takeover:.1f} s > {TAKEOVER_TARGET:g} s")
        if self.resume is not None and self.resume > RESUME_TARGET:
            missed.append(f"work resumed {self.resume:.1f} s after the fault > {RESUME_TARGET:g} s")
        if not faults and self.jobs and self.redeliveries > REDELIVERY_TARGET * self.jobs:
            missed.append(f"{self.redeliveries} extra deliveries > {REDELIVERY_TARGET:.0%}")
        return missed


class Monitor(threading.Thread):
    """Polls the status table for takeover times: from a kill until every job that was running
    then runs again under another claim (or has finished)."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.leases: dict[str, str | None] = {}
        self.watching: list[tuple[float, dict[str, str | None]]] = []
        self.takeovers: list[float] = []

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                jobs = self.stack.jobs()
            except Exception:
                continue  # the database is down in this scenario
            now = time.monotonic()
            running = {j.id: j.lease_token for j in jobs if j.status is JobStatus.running}
            done = {j.id for j in jobs if j.status.done}
            with self.lock:
                self.leases = running
                still: list[tuple[float, dict[str, str | None]]] = []
                for at, held in self.watching:
                    left = {
                        i: t
                        for i, t in held.items()
                        if i not in done and running.get(i, t) == t  # not yet claimed anew
                    }
                    if left:
                        still.append((at, left))
                    else:
                        self.takeovers.append(now - at)
                self.watching = still

    def killed(self) -> None:
        """A worker was just killed: time until every job running now runs again."""
        with self.lock:
            if self.leases:
                self.watching.append((time.monotonic(), dict(self.leases)))

    def stop(self) -> float | None:
        self.stopped.set()
        self.join(timeout=5)
        now = time.monotonic()
        pending = [now - at for at, _ in self.watching]  # never taken over: counts as it stands
        times = self.takeovers + pending
        return max(times) if times else None


class Chaos:
    """The private services and the sandbox, shared by the scenarios, each on a fresh state."""

    def __init__(self, short: bool, workdir: Path) -> None:
        self.short = short
        self.workdir = workdir
        self.redis = PrivateRedis().start()
        self.postgres = PrivatePostgres().start()
        self.sandbox = SandboxProcess().start()
        self.timings = {} if short else PRODUCTION

    def close(self) -> None:
        self.sandbox.stop()
        self.redis.close()
        self.postgres.close()

    def size(self, full: int, short: int) -> int:
        return short if self.short else full

    @contextlib.contextmanager
    def stack(self, name: str) -> Iterator[Stack]:
        database = f"chaos_{name}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(**self._pg(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        self.redis.flush()
        self.sandbox.reset()
        self.sandbox.configure(**NO_LIMITS)
        url = make_url(self.postgres.url).set(database=database)
        workdir = self.workdir / name
        workdir.mkdir()
        stack = Stack(self.sandbox, self.redis.url, url.render_as_string(), workdir)
        try:
            yield stack
        finally:
            stack.close()
            with (
                contextlib.suppress(Exception),
                psycopg.connect(**self._pg(), autocommit=True) as c,
            ):
                c.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def _pg(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.postgres.port, "user": "postgres"}

    def workers(self, stack: Stack, count: int = 3, **settings: Any) -> list[WorkerProcess]:
        return [
            stack.start_worker(concurrency=4, **{**self.timings, **settings}) for _ in range(count)
        ]


# -- measuring -------------------------------------------------------------------------------


def needed_calls(request: JobRequest) -> int:
    if request.operation is Operation.provision_site:
        return 1 + len(request.goals) + len(request.shared_links)
    return 1


def finish_times(jobs: list[ProvisioningJob]) -> list[float]:
    return sorted(
        j.finished_at.replace(tzinfo=UTC).timestamp() for j in jobs if j.finished_at is not None
    )


def wait_all(stack: Stack, count: int, timeout: float) -> list[ProvisioningJob]:
    deadline = time.monotonic() + timeout
    jobs: list[ProvisioningJob] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            jobs = stack.jobs()
            if len(jobs) >= count and all(j.status.done for j in jobs):
                return jobs
        time.sleep(0.25)
    return jobs


def compare(
    result: Result,
    stack: Stack,
    jobs: list[ProvisioningJob],
    *,
    expected_jobs: int,
    started: float,
    calls_before: int = 0,
    foreign: Counter[int] | None = None,
) -> None:
    """Fill the result in from the table and the sandbox's state."""
    state = stack.sandbox.state()
    result.jobs = len(jobs)
    result.outcomes = dict(Counter(j.status.value for j in jobs))
    result.lost = max(0, expected_jobs - len(jobs)) + sum(not j.status.done for j in jobs)
    result.duplicated = max(0, len(jobs) - expected_jobs)
    result.wrongly_failed = sum(j.status is not JobStatus.succeeded and j.status.done for j in jobs)

    sites = Counter(s["domain"] for s in state["sites"])
    goals = Counter((g["domain"], natural_key(g)) for g in state["goals"])
    links = Counter(
        (s["domain"], link["name"]) for s in state["sites"] for link in s["shared_links"]
    )
    result.duplicated += sum(n - 1 for c in (sites, goals, links) for n in c.values() if n > 1)
    goal_ids = {g["id"] for g in state["goals"]}
    for job in jobs:
        if job.status is not JobStatus.succeeded:
            continue
        spec = job.spec
        if spec.operation is Operation.provision_site:
            missing = (job.domain not in sites) + sum(
                (job.domain, g.natural_key) not in goals for g in spec.goals
            )
            missing += sum((job.domain, name) not in links for name in spec.shared_links)
            result.lost += missing
        elif spec.operation is Operation.delete_site:
            result.lost += job.domain in sites
        else:
            result.lost += spec.goal_id in goal_ids

    counters = state["counters"]
    foreign = foreign or Counter()
    result.rate_limited = counters["rate_limited"] - foreign[429]
    needed = sum(needed_calls(j.spec) for j in jobs)
    result.extra_calls = counters["total"] - calls_before - needed - foreign.total()
    result.redeliveries = sum(j.dispatch_count for j in jobs) - len(jobs)
    finished = finish_times(jobs)
    if finished:
        moments = [started, *finished]
        result.stall = max(b - a for a, b in itertools.pairwise(moments))
        result.wall = finished[-1] - started
    if result.back is not None:
        # The longest wait for a job to finish once the service was back.
        after = [result.back, *(t for t in finished if t > result.back)]
        result.resume = max((b - a for a, b in itertools.pairwise(after)), default=None)


def submit(stack: Stack, domains: list[str], **kwargs: Any) -> float:
    started = datetime.now(UTC).timestamp()
    stack.submit_sites(domains, **kwargs)
    return started


def run_until_done(
    stack: Stack,
    result: Result,
    expected: int,
    started: float,
    *,
    timeout: float,
    **compare_args: Any,
) -> None:
    jobs = wait_all(stack, expected, timeout)
    compare(result, stack, jobs, expected_jobs=expected, started=started, **compare_args)


def until_share_done(stack: Stack, total: int, share: float = 0.3, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if stack.status_counts()[JobStatus.succeeded.value] >= share * total:
                return
        time.sleep(0.1)


# -- scenarios -------------------------------------------------------------------------------


def baseline(chaos: Chaos, result: Result) -> None:
    n = chaos.size(1000, 100)
    with chaos.stack("baseline") as stack:
        chaos.workers(stack)
        started = submit(stack, [f"base{i}.example.com" for i in range(n)])
        run_until_done(stack, result, n, started, timeout=600)


def sigkill(chaos: Chaos, result: Result) -> None:
    n, kills = chaos.size(1000, 120), chaos.size(22, 5)
    with chaos.stack("sigkill") as stack:
        stack.sandbox.configure(latency_ms=80)  # slow enough for every kill to land before the end
        workers = chaos.workers(stack)
        monitor = Monitor(stack)
        monitor.start()
        started = submit(stack, [f"kill{i}.example.com" for i in range(n)])
        rng = random.Random(9)
        done = 0
        for k in range(kills):
            time.sleep(1.0)
            if stack.status_counts()[JobStatus.succeeded.value] >= n:
                break
            victim = rng.choice(workers)
            if k % 3 == 2:  # the whole worker: main process and pool; restarted later
                victim.kill()
                monitor.killed()
                victim.start()
            else:  # the pool children: the main process forks new ones
                victim.kill_pool()
                monitor.killed()
            done += 1
        result.faults = f"{done} SIGKILLs"
        run_until_done(stack, result, n, started, timeout=600)
        result.takeover = monitor.stop()
        if done < 20 and not chaos.short:
            result.problems.append(f"only {done} SIGKILLs happened before the run ended")


def sigterm(chaos: Chaos, result: Result) -> None:
    n = chaos.size(500, 80)
    with chaos.stack("sigterm") as stack:
        stack.sandbox.configure(latency_ms=40)
        workers = chaos.workers(stack)
        started = submit(stack, [f"term{i}.example.com" for i in range(n)])
        until_share_done(stack, n)
        for worker in workers[:2]:
            assert worker.proc is not None
            worker.proc.send_signal(signal.SIGTERM)
        for worker in workers[:2]:
            assert worker.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=30)
            worker.start()
        result.faults = "2 workers SIGTERMed and restarted"
        run_until_done(stack, result, n, started, timeout=600)


def _broker_fault(chaos: Chaos, result: Result, name: str, fault: Callable[[], None]) -> None:
    n = chaos.size(500, 80)
    with chaos.stack(name) as stack:
        stack.sandbox.configure(latency_ms=40)
        chaos.workers(stack)
        started = submit(stack, [f"{name.replace('_', '')}{i}.example.com" for i in range(n)])
        until_share_done(stack, n)
        fault()
        result.back = datetime.now(UTC).timestamp()
        run_until_done(stack, result, n, started, timeout=600)


def redis_flush(chaos: Chaos, result: Result) -> None:
    result.faults = "FLUSHALL at 30%"
    _broker_fault(chaos, result, "redis_flush", chaos.redis.flush)


def redis_restart(chaos: Chaos, result: Result) -> None:
    result.faults = "restart (no persistence) at 30%"
    _broker_fault(chaos, result, "redis_restart", chaos.redis.restart)


def pg_restart(chaos: Chaos, result: Result) -> None:
    outage = chaos.size(10, 4)

    def restart() -> None:
        chaos.postgres.stop()
        time.sleep(outage)
        chaos.postgres.start()

    result.faults = f"PostgreSQL down {outage} s at 30%"
    _broker_fault(chaos, result, "pg_restart", restart)


def api_faults(chaos: Chaos, result: Result) -> None:
    n = chaos.size(1000, 100)
    with chaos.stack("api_faults") as stack:
        chaos.workers(stack)
        stack.sandbox.configure(fail_rate=0.2, drop_rate=0.05)
        started = submit(stack, [f"fault{i}.example.com" for i in range(n)])
        stop = threading.Event()

        def spikes() -> None:  # 1.5 s answers for one second in every five
            while not stop.wait(4):
                stack.sandbox.configure(latency_ms=1500)
                if stop.wait(1):
                    break
                stack.sandbox.configure(latency_ms=0)

        spiker = threading.Thread(target=spikes, daemon=True)
        spiker.start()
        jobs = wait_all(stack, n, 900)
        stop.set()
        spiker.join()
        stack.sandbox.configure(fail_rate=0, drop_rate=0, latency_ms=0)
        result.faults = "20% 5xx, 5% dropped after commit, latency spikes"
        compare(result, stack, jobs, expected_jobs=n, started=started)


def deletes_killed(chaos: Chaos, result: Result) -> None:
    n = chaos.size(200, 30)
    with chaos.stack("deletes_killed") as stack:
        workers = chaos.workers(stack)
        domains = [f"del{i}.example.com" for i in range(n)]
        stack.submit_sites(domains)
        provisioned = wait_all(stack, n, 300)
        before_deletes = stack.sandbox.state()
        before = before_deletes["counters"]["total"]
        goal_ids = {(g["domain"], natural_key(g)): g["id"] for g in before_deletes["goals"]}
        # Slow answers, so the kills land after Plausible acted and before the answer arrived.
        stack.sandbox.configure(latency_ms=600)
        started = datetime.now(UTC).timestamp()
        for i, domain in enumerate(domains):
            if i % 2:
                event: dict[str, Any] = {"type": "site.delete", "domain": domain}
            else:
                goal = goal_ids[(domain, "event:Signup")]
                event = {"type": "goal.delete", "domain": domain, "goal_id": goal}
            stack.submit(parse_event(event).request, key=f"delete-{domain}")
        monitor = Monitor(stack)
        monitor.start()
        kills = 0
        while kills < chaos.size(40, 8) and not all(j.status.done for j in stack.jobs()):
            time.sleep(0.8)
            workers[kills % len(workers)].kill_pool()
            monitor.killed()
            kills += 1
        stack.sandbox.configure(latency_ms=0)
        everything = wait_all(stack, 2 * n, 300)
        jobs = [j for j in everything if j.operation is not Operation.provision_site]
        result.faults = f"{kills} SIGKILLs mid-answer"
        compare(result, stack, jobs, expected_jobs=n, started=started, calls_before=before)
        result.takeover = monitor.stop()
        not_provisioned = sum(j.status is not JobStatus.succeeded for j in provisioned)
        if not_provisioned:
            result.problems.append(f"{not_provisioned} sites were not provisioned to delete")


def slow_api(chaos: Chaos, result: Result) -> None:
    goals, latency = chaos.size(70, 30), chaos.size(1500, 400)
    with chaos.stack("slow_api") as stack:
        # Short runs scale the time limits down with the job, so the budget is still crossed.
        limits = {} if not chaos.short else {"job_time_budget_seconds": 3,
                                             "task_soft_time_limit": 6, "task_time_limit": 8}  # fmt: skip
        chaos.workers(stack, count=2, **limits)
        stack.sandbox.configure(latency_ms=latency)
        many = [{"goal_type": "event", "event_name": f"Step {i}"} for i in range(goals)]
        started = datetime.now(UTC).timestamp()
        stack.submit_sites(["many-goals.example.com"], goals=many)
        stack.submit_sites([f"slow{i}.example.com" for i in range(4)])
        jobs = wait_all(stack, 5, 900)
        result.faults = f"{latency} ms answers, a {goals}-goal job"
        compare(result, stack, jobs, expected_jobs=5, started=started)


def foreign_429(chaos: Chaos, result: Result) -> None:
    n = chaos.size(150, 50)
    with chaos.stack("foreign_429") as stack:
        window = {"burst_limit": 60, "hourly_limit": 100_000}
        stack.sandbox.configure(**window)
        chaos.workers(stack, count=2, **window)
        stop = threading.Event()
        answers: Counter[int] = Counter()

        def other_client() -> None:  # a script of the same team, two calls a second
            with stack.sandbox.client() as client:
                while not stop.wait(0.5):
                    with contextlib.suppress(httpx.HTTPError):
                        answers[client.get("/api/v1/sites").status_code] += 1

        other = threading.Thread(target=other_client, daemon=True)
        other.start()
        started = submit(stack, [f"shared{i}.example.com" for i in range(n)], links=())
        jobs = wait_all(stack, n, 900)
        stop.set()
        other.join()
        result.faults = f"another client: {answers.total()} calls, {answers[429]} refused"
        compare(result, stack, jobs, expected_jobs=n, started=started, foreign=answers)


def three_producers(chaos: Chaos, result: Result) -> None:
    n = chaos.size(500, 60)
    with chaos.stack("three_producers") as stack:
        chaos.workers(stack)
        events = [provision_event(f"prod{i}.example.com", key=f"evt-{i}") for i in range(n)]
        rows = stack.workdir / "signups.jsonl"
        rows.write_text("".join(json.dumps(e) + "\n" for e in events))
        port = free_port()
        env = stack.env(extra={"PROVISIONER_API_TOKEN": TOKEN})
        logs = [(stack.workdir / f"{name}.log").open("wb") for name in ("serve", "consume")]
        serve = subprocess.Popen(
            [*PROVISION, "serve", "--port", str(port)], cwd=REPO_ROOT, env=env,
            stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        consume = subprocess.Popen(
            [*PROVISION, "consume", "--redis", chaos.redis.url, "--stream", "signups"],
            cwd=REPO_ROOT, env=env, stdout=logs[1], stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                time.sleep(0.1)
            started = datetime.now(UTC).timestamp()

            def over_http() -> None:
                with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
                    for e in events:
                        c.post("/jobs", json=e).raise_for_status()

            def over_stream() -> None:
                with contextlib.closing(redis.Redis.from_url(chaos.redis.url)) as r:
                    for e in events:
                        r.xadd("signups", {"event": json.dumps(e)})

            def from_file() -> None:
                subprocess.run(
                    [*PROVISION, "import", str(rows)], cwd=REPO_ROOT, env=env, check=True,
                    capture_output=True, timeout=300,
                )  # fmt: skip

            producers = [threading.Thread(target=f) for f in (over_http, over_stream, from_file)]
            for p in producers:
                p.start()
            for p in producers:
                p.join()
            jobs = wait_all(stack, n, 600)
            result.faults = "HTTP, stream and file at once"
            compare(result, stack, jobs, expected_jobs=n, started=started)
        finally:
            for proc in (serve, consume):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            for log in logs:
                log.close()


SCENARIOS: dict[str, Callable[[Chaos, Result], None]] = {
    "baseline": baseline,
    "sigkill": sigkill,
    "sigterm": sigterm,
    "redis_flush": redis_flush,
    "redis_restart": redis_restart,
    "pg_restart": pg_restart,
    "api_faults": api_faults,
    "deletes_killed": deletes_killed,
    "slow_api": slow_api,
    "foreign_429": foreign_429,
    "three_producers": three_producers,
}
#: Scenarios whose point is to have no fault: the redelivery target applies.
NO_FAULTS = {"baseline", "three_producers"}


def table(results: list[Result]) -> str:
    header = ("scenario", "jobs", "outcomes", "lost", "dup", "bad fail", "429", "extra",
              "redeliv", "takeover", "resume", "stall", "wall", "faults")  # fmt: skip
    rows = [header]
    for r in results:
        outcomes = " ".join(f"{k}={v}" for k, v in sorted(r.outcomes.items())) or "-"
        takeover = "-" if r.takeover is None else f"{r.takeover:.1f}s"
        resume = "-" if r.resume is None else f"{r.resume:.1f}s"
        rows.append((r.scenario, str(r.jobs), outcomes, str(r.lost), str(r.duplicated),
                     str(r.wrongly_failed), str(r.rate_limited), str(r.extra_calls),
                     str(r.redeliveries), takeover, resume, f"{r.stall:.1f}s", f"{r.wall:.0f}s",
                     r.faults))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the CI version: fewer jobs")
    parser.add_argument("--only", help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the logs' directory")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the workers and private servers stop too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    chaos = Chaos(args.short, workdir)
    results: list[Result] = []
    try:
        for name in names:
            result = Result(name)
            began = time.monotonic()
            try:
                SCENARIOS[name](chaos, result)
            # A scenario that breaks (a service that would not come back, ...) is a result.
            except (Exception, pytest.fail.Exception) as exc:
                result.problems.append(f"{type(exc).__name__}: {exc}")
            print(f"{name}: done in {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
            results.append(result)
    finally:
        chaos.close()
    print(table(results))
    failed = False
    for r in results:
        for problem in r.missed(faults=r.scenario not in NO_FAULTS):
            print(f"MISSED {r.scenario}: {problem}")
            failed = True
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    if args.keep or failed:
        print(f"logs: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
