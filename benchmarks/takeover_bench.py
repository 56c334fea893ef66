"""How long a SIGKILLed worker's jobs wait before they run again, from the same host and from
another one (a PID namespace of its own, as two hosts look to each other).

    python benchmarks/takeover_bench.py                       # 3 runs each, heartbeats
    python benchmarks/takeover_bench.py --runs 5 --lease-only # also with the registry's handback
                                                              # off: the lease alone, as before
    python benchmarks/takeover_bench.py --store sqlite --redis redis://127.0.0.1:6379/11

Each run: a fresh status database (PostgreSQL at ``BENCH_POSTGRES_URL``, or a SQLite file), the
Redis database given (flushed: use a private or a test one), the sandbox over HTTP answering
every call after 150 ms, and two ``provision worker`` processes (threads pool, production
timings: 10 s leases, 1 s heartbeats, 3 s heartbeat timeout). 40 sites are submitted; once the
victim runs jobs it is SIGKILLed whole, and the time is taken until every job it was running runs
again under a new claim (or has finished). Prints each run's seconds and the worst.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks.support import database
from testkit.sandbox_process import SandboxProcess
from testkit.workers import NO_LIMITS, Stack
from worker.jobs.states import JobStatus

#: The production timings (testkit's defaults are scaled down for tests).
PRODUCTION: dict[str, Any] = {
    "lease_seconds": 10,
    "task_time_limit": 120,
    "task_soft_time_limit": 90,
    "job_time_budget_seconds": 60,
    "sweep_interval_seconds": 1,
    "redispatch_after_seconds": 5,
}
OTHER_HOST = ("unshare", "--pid", "--fork", "--kill-child")


def one_run(
    sandbox: SandboxProcess, redis_url: str, store: str, other_host: bool, settings: dict[str, Any]
) -> float:
    redis.Redis.from_url(redis_url).flushdb()
    sandbox.reset()
    sandbox.configure(**NO_LIMITS, latency_ms=150)
    with tempfile.TemporaryDirectory(prefix="takeover-") as tmp, database(store, Path(tmp)) as url:
        stack = Stack(sandbox, redis_url, url, Path(tmp))
        try:
            stack.start_worker(pool="threads", concurrency=4, **settings)
            prefix = OTHER_HOST if other_host else ()
            victim = stack.start_worker(pool="threads", concurrency=4, prefix=prefix, **settings)
            owner_pid = 1 if other_host else victim.pid
            ids = stack.submit_sites(f"t{n}.example.com" for n in range(40))
            deadline = time.monotonic() + 60
            while True:
                owners = {row.id for row in _registered(stack) if row.pid == owner_pid}
                held = {
                    j.id: j.lease_token
                    for j in stack.jobs(ids)
                    if j.status is JobStatus.running and j.lease_owner in owners
                }
                if held:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the victim never ran a job\n{stack.logs()}")
                time.sleep(0.02)
            victim.kill()
            killed = time.monotonic()
            while held:
                jobs = {j.id: j for j in stack.jobs(list(held))}
                held = {
                    i: token
                    for i, token in held.items()
                    if not jobs[i].status.done
                    and not (jobs[i].status is JobStatus.running and jobs[i].lease_token != token)
                }
                if time.monotonic() - killed > 120:
                    raise RuntimeError(f"not taken over after 120 s\n{stack.logs()}")
                time.sleep(0.02)
            return time.monotonic() - killed
        finally:
            stack.close()
            redis.Redis.from_url(redis_url).flushdb()


def _registered(stack: Stack) -> list[Any]:
    from sqlmodel import Session, select

    from worker.jobs.models import WorkerProcessRow

    with Session(stack.engine) as session:
        return list(session.exec(select(WorkerProcessRow)).all())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--redis",
        default=os.environ.get("PROVISIONER_TEST_REDIS_URL", "redis://127.0.0.1:6379/11"),
        help="Redis database for the broker (flushed before and after each run).",
    )
    parser.add_argument(
        "--lease-only",
        action="store_true",
        help="Also measure with the registry's handback off (the lease alone, as before it).",
    )
    args = parser.parse_args(argv)
    modes: list[tuple[str, bool, dict[str, Any]]] = [
        ("other host", True, PRODUCTION),
        ("same host", False, PRODUCTION),
    ]
    if args.lease_only:
        lease_only = {**PRODUCTION, "heartbeat_timeout_seconds": 3600}
        modes.append(("other host, lease only", True, lease_only))
    sandbox = SandboxProcess().start()
    try:
        print(f"seconds from SIGKILL until the victim's jobs run again ({args.store})")
        for name, other_host, settings in modes:
            times = [
                one_run(sandbox, args.redis, args.store, other_host, settings)
                for _ in range(args.runs)
            ]
            shown = " ".join(f"{t:.2f}" for t in times)
            print(
                f"{name:<24} {shown}   median {statistics.median(times):.2f}  max {max(times):.2f}"
            )
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
