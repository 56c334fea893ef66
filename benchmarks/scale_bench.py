"""The control plane at a large backlog, on demand:
``python benchmarks/scale_bench.py [--sizes 10000,100000,1000000] [--batches 1000] [--runs 15]
[--stores sqlite,postgresql]``.

For each store and backlog size, fills a fresh status database (a SQLite file; a fresh
PostgreSQL database at ``BENCH_POSTGRES_URL``, created and dropped here) with that many queued
bulk jobs over ``--batches`` batches (each job: a site, two goals, a shared link: 4 calls), plus
a few interactive ones, through the product's own INSERT (so the database's counts are kept as
in production), then times, median of ``--runs``:

- a scheduler tick that admits a window's worth of jobs (Plausible's default quota: a fresh
  hour and burst window at every run; the jobs it admits are then marked done, as workers would);
- the quota report (``provision quota``, ``GET /quota``, the metrics' gauges);
- a batch's summary with its expected completion (``GET /batches/{id}``);
- the dashboard's batches page (``GET /ui``, signed in, through the HTTP app in this process).

Prints one table per store.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import insert, text, update
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.support import database
from provision.dashboard.auth import COOKIE, Sessions
from provision.http import create_app
from provision.tokens import LEGACY, Tokens, token_hash
from testkit.databases import migrated_engine
from worker.accounts import load_accounts
from worker.jobs.db import table_of
from worker.jobs.intake import BatchOf, insert_batch, job_values
from worker.jobs.models import ProvisioningJob
from worker.jobs.specs import GoalSpec, JobRequest
from worker.jobs.states import JobStatus, Operation, Priority
from worker.jobs.store import JobStore
from worker.quota.limiter import Limiter
from worker.quota.report import Reporter
from worker.quota.scheduler import Scheduler
from worker.settings import Settings

TOKEN = "bench-token"


def signed_in(store: JobStore) -> str:
    """A dashboard session's cookie value, as a sign-in with the service's token makes."""
    sessions = Sessions(store.engine, Tokens({token_hash(TOKEN): LEGACY}))
    return sessions.start(LEGACY, "127.0.0.1", "benchmark")


GOALS = (
    GoalSpec(goal_type="event", event_name="Signup"),
    GoalSpec(goal_type="page", page_path="/pricing"),
)
OPERATIONS = ("scheduler tick", "quota report", "batch summary + ETA", "dashboard batches")


class Clock:
    """Wall time for the limiter, moved an hour on at every run so each tick meets fresh
    windows."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A dispatcher that publishes nowhere and remembers what it was handed."""

    def __init__(self) -> None:
        self.published: list[str] = []

    def publish(self, job_ids: Any, *, first: bool = False, bulk: bool = False) -> None:
        self.published.extend(job_ids)

    def queued_messages(self) -> dict[Any, int]:
        return {}


def rows(jobs: int, batches: int, now: datetime) -> Iterator[tuple[BatchOf, dict[str, Any]]]:
    for n in range(jobs):
        index = n * batches // jobs
        batch = BatchOf(f"batch-{index:05d}", f"signups-{index:05d}.jsonl", "import")
        request = JobRequest(
            operation=Operation.provision_site,
            domain=f"site{n}.example.com",
            timezone="Europe/Berlin",
            goals=GOALS,
            shared_links=("Client dashboard",),
        )
        created = now - timedelta(seconds=jobs - n)
        yield (
            batch,
            job_values(
                request, key=f"evt_{n}", batch_id=batch.id, now=created, priority=Priority.bulk
            ),
        )


def fill(engine: Engine, jobs: int, batches: int) -> None:
    table = table_of(ProvisioningJob)
    dialect = engine.dialect.name
    now = datetime.now(UTC)
    chunk: list[dict[str, Any]] = []
    seen: set[str] = set()
    with engine.begin() as connection:
        for batch, values in rows(jobs, batches, now):
            if batch.id not in seen:
                seen.add(batch.id)
                connection.execute(insert_batch(dialect), batch.row(values["created_at"]))
            chunk.append(values)
            if len(chunk) == 5000:
                connection.execute(insert(table), chunk)
                chunk = []
        if chunk:
            connection.execute(insert(table), chunk)
    store = JobStore(engine)
    for n in range(20):  # a few signups waiting too
        store.enqueue(
            JobRequest(operation=Operation.provision_site, domain=f"signup{n}.example.com"),
            source="http",
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE" if dialect == "postgresql" else "ANALYZE"))


def median_ms(run: Callable[[], Any], runs: int, between: Callable[[], Any] | None = None) -> float:
    run()  # warm
    times = []
    for _ in range(runs):
        if between is not None:
            between()
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(url: str, jobs: int, batches: int, runs: int) -> dict[str, float]:
    engine = migrated_engine(url)
    started = time.monotonic()
    fill(engine, jobs, batches)
    print(f"  filled {jobs:,} jobs in {time.monotonic() - started:.0f} s", file=sys.stderr)
    store = JobStore(engine)
    settings = Settings(hourly_limit=600, burst_limit=60, burst_seconds=10)
    accounts = load_accounts(settings)
    clock = Clock()
    limiter = Limiter(engine, clock=clock)
    recorder = Recorder()
    scheduler = Scheduler(store, limiter, accounts, recorder, ahead=settings.dispatch_ahead)
    reporter = Reporter(store, Limiter(engine), accounts)

    def next_window() -> None:
        clock.now += 3600
        if recorder.published:  # the workers did them
            done = {"status": JobStatus.succeeded, "finished_at": datetime.now(UTC)}
            with engine.begin() as connection:
                connection.execute(
                    update(table_of(ProvisioningJob))
                    .where(table_of(ProvisioningJob).c.id.in_(recorder.published))
                    .values(dispatched_at=None, **done)
                )
            recorder.published.clear()

    admitted: list[int] = []
    out = {
        "scheduler tick": median_ms(
            lambda: admitted.append(len(scheduler.tick())), runs, next_window
        )
    }
    print(f"  each tick admitted {min(admitted)} to {max(admitted)} jobs", file=sys.stderr)
    out["quota report"] = median_ms(reporter.quotas, runs)
    rng = random.Random(3)
    names = [f"batch-{rng.randrange(batches):05d}" for _ in range(runs + 1)]
    pick = iter(names)

    def summary() -> None:
        batch = next(pick)
        store.batch_summary(batch)
        reporter.batch_eta(batch)

    out["batch summary + ETA"] = median_ms(summary, runs)
    out["dashboard batches"] = asyncio.run(dashboard_ms(store, reporter, runs))
    engine.dispose()
    return out


async def dashboard_ms(store: JobStore, reporter: Reporter, runs: int) -> float:
    app = create_app(store, token=SecretStr(TOKEN), reporter=reporter)
    cookies = {COOKIE: signed_in(store)}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bench", cookies=cookies
    ) as client:
        times = []
        for n in range(runs + 1):
            started = time.perf_counter()
            response = await client.get("/ui")
            response.raise_for_status()
            if n:  # the first is warm-up
                times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    for store in args.stores.split(","):
        table: dict[int, dict[str, float]] = {}
        for size in sizes:
            print(f"{store}: {size:,} queued jobs in {args.batches} batches", file=sys.stderr)
            with tempfile.TemporaryDirectory() as workdir, database(store, Path(workdir)) as url:
                table[size] = measure(url, size, args.batches, args.runs)
        print(f"\n{store} (median ms of {args.runs} runs; {args.batches} batches)")
        print("| queued jobs | " + " | ".join(OPERATIONS) + " |")
        print("|---:|" + "---:|" * len(OPERATIONS))
        for size, figures in table.items():
            cells = " | ".join(f"{figures[name]:.1f}" for name in OPERATIONS)
            print(f"| {size:,} | {cells} |")


if __name__ == "__main__":
    main()
