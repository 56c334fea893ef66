"""The dashboard's response times with 100,000 jobs in the status table, on demand:
``python benchmarks/dashboard_bench.py [--jobs 100000] [--batches 50] [--requests 40]``.

Fills a fresh SQLite status table (and a fresh PostgreSQL database when one is reachable at
``BENCH_POSTGRES_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``; created and
dropped here) with ``--jobs`` jobs over ``--batches`` batches in bulk INSERTs, in every status
(succeeded mostly, some failed with error codes, queued, waiting, running), then requests each
dashboard page through ``provision.http.app.create_app`` in this process (httpx over the ASGI
transport, signed in with the session cookie) and prints p50/p95 per page, and each page's
query plans (``--plans``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import insert, text
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.support import database  # noqa: E402
from provision.dashboard.auth import COOKIE, Sessions  # noqa: E402
from provision.http.app import create_app  # noqa: E402
from provision.tokens import LEGACY, Tokens, token_hash  # noqa: E402
from testkit.databases import migrated_engine  # noqa: E402
from worker.accounts import load_accounts  # noqa: E402
from worker.jobs.intake import job_values  # noqa: E402
from worker.jobs.models import ProvisioningJob  # noqa: E402
from worker.jobs.specs import JobRequest  # noqa: E402
from worker.jobs.states import JobStatus, Operation, Priority  # noqa: E402
from worker.jobs.store import JobStore  # noqa: E402
from worker.quota.limiter import Limiter  # noqa: E402
from worker.quota.report import Reporter  # noqa: E402
from worker.settings import Settings  # noqa: E402

TOKEN = "bench-token"


def signed_in(store: JobStore) -> str:
    """A dashboard session's cookie value, as a sign-in with the service's token makes."""
    sessions = Sessions(store.engine, Tokens({token_hash(TOKEN): LEGACY}))
    return sessions.start(LEGACY, "127.0.0.1", "benchmark")


#: Error codes of failed jobs, most common first.
CODES = ("domain_taken", "invalid_domain", "site_not_found", "goal_not_found")
MESSAGES = {
    "domain_taken": "This domain has already been taken. Perhaps one of your team members "
    "registered it?",
    "invalid_domain": "domain must be a valid host name",
    "site_not_found": "Site could not be found",
    "goal_not_found": "Goal could not be found",
}


def rows(jobs: int, batches: int, now: datetime) -> Iterator[dict[str, Any]]:
    """``jobs`` rows over ``batches`` batches (and 2% without a batch), oldest batch first: the
    older batches done, the newest ones under way."""
    rng = random.Random(7)
    batch_ids = [f"{n:04d}{rng.getrandbits(48):012x}" for n in range(batches)]
    for n in range(jobs):
        index = n * batches // jobs
        batch = batch_ids[index] if n % 50 else None
        created = now - timedelta(hours=batches - index, seconds=-(n % 3600))
        domain = f"site{n}.example.com"
        request = JobRequest(
            operation=Operation.provision_site,
            domain=domain,
            timezone="Europe/Berlin",
            account="default" if n % 3 else "agency",
        )
        values = job_values(
            request,
            key=f"evt_{n}",
            batch_id=batch,
            now=created,
            priority=Priority.bulk if batch else Priority.interactive,
        )
        # Every row names every column: one executemany of one statement.
        values.update(
            created_at=created,
            updated_at=created,
            started_at=None,
            finished_at=None,
            error_code=None,
            error_message=None,
            error_status=None,
            next_attempt_at=None,
        )
        fresh = index >= batches - 2  # the two newest batches are still running
        roll = rng.random()
        if fresh and roll < 0.5:
            status = JobStatus.queued if roll < 0.4 else JobStatus.waiting
        elif fresh and roll < 0.52:
            status = JobStatus.running
        elif roll < 0.96:
            status = JobStatus.succeeded
        else:
            status = JobStatus.failed
        values["status"] = status
        if status in (JobStatus.succeeded, JobStatus.failed, JobStatus.running):
            values["attempts"] = 1
            values["started_at"] = created + timedelta(seconds=5)
        if status in (JobStatus.succeeded, JobStatus.failed):
            values["finished_at"] = created + timedelta(seconds=8)
        if status == JobStatus.succeeded:
            values["progress"] = {
                "site": {"domain": domain, "timezone": "Europe/Berlin"},
                "goals": {
                    "event:Signup": {
                        "id": n,
                        "goal_type": "event",
                        "event_name": "Signup",
                        "display_name": "Signup",
                    }
                },
                "shared_links": {"Client dashboard": f"https://plausible.io/share/{domain}?auth=x"},
            }
        if status == JobStatus.failed:
            code = CODES[min(int(rng.expovariate(1.2)), len(CODES) - 1)]
            values.update(error_code=code, error_message=MESSAGES[code], error_status=400)
        if status == JobStatus.waiting:
            values.update(
                error_code="rate_limited",
                error_message="429",
                next_attempt_at=now + timedelta(seconds=30),
            )
        yield values


def fill(engine: Engine, jobs: int, batches: int) -> None:
    table = ProvisioningJob.__table__  # type: ignore[attr-defined]
    chunk: list[dict[str, Any]] = []
    with engine.begin() as connection:
        for values in rows(jobs, batches, datetime.now(UTC)):
            chunk.append(values)
            if len(chunk) == 5000:
                connection.execute(insert(table), chunk)
                chunk = []
        if chunk:
            connection.execute(insert(table), chunk)
    with engine.connect() as connection:
        connection.execute(text("ANALYZE"))
        connection.commit()
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE provisioning_jobs"))


def reporter_for(store: JobStore) -> Reporter:
    settings = Settings(hourly_limit=600, burst_limit=60, burst_seconds=10)
    return Reporter(store, Limiter(store.engine), load_accounts(settings))


async def time_pages(
    store: JobStore, requests: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each page's response times (ms) once warm, and its first (cold) response time: the
    first request of a process reads what the dashboard then keeps (each batch's submission
    time, a done batch's first start and last finish) and works out the expected completions
    (again every ``ETA_SECONDS``)."""
    app = create_app(store, token=SecretStr(TOKEN), reporter=reporter_for(store))
    cookies = {COOKIE: signed_in(store)}
    t = ProvisioningJob
    with store.engine.connect() as connection:
        newest = connection.execute(
            text(
                f"SELECT batch_id FROM {t.__tablename__} WHERE batch_id IS NOT NULL "
                "ORDER BY created_at DESC LIMIT 1"
            )
        ).scalar_one()
        failed = connection.execute(
            text(f"SELECT id FROM {t.__tablename__} WHERE status = 'failed' LIMIT 1")
        ).scalar_one()
    pages = {
        "batches list": "/ui",
        "batches fragment (live)": "/ui/fragments/batches",
        "a batch": f"/ui/batches/{newest}",
        "batch fragment (live)": f"/ui/fragments/batches/{newest}",
        "search by domain": "/ui/search?q=site4242.example.com",
        "search status=failed": "/ui/search?status=failed",
        "search (all jobs, newest)": "/ui/search",
        "a job": f"/ui/jobs/{failed}",
        "quota": "/ui/quota",
        "quota fragment (live)": "/ui/fragments/quota",
    }
    timings: dict[str, list[float]] = {}
    cold: dict[str, float] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bench", cookies=cookies
    ) as client:
        for name, path in pages.items():
            started = time.perf_counter()
            first = await client.get(path)
            cold[name] = (time.perf_counter() - started) * 1000
            assert first.status_code == 200, (path, first.status_code, first.text[:300])
            samples = []
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            timings[name] = samples
    return timings, cold


def report(
    store_name: str, jobs: int, measured: tuple[dict[str, list[float]], dict[str, float]]
) -> None:
    timings, cold = measured
    print(f"\n{store_name}: {jobs:,} jobs")
    print(f"  {'page':28} {'p50 ms':>8} {'p95 ms':>8} {'cold ms':>8}")
    for name, samples in timings.items():
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        print(f"  {name:28} {statistics.median(ordered):8.1f} {p95:8.1f} {cold[name]:8.1f}")


def plans(engine: Engine) -> None:
    """The query plans of the dashboard's queries (SQLite's EXPLAIN QUERY PLAN, PostgreSQL's
    EXPLAIN), as they run: captured from the engine while one of each page is served."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        asyncio.run(time_pages(JobStore(engine), 0))
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    unique = dict(seen)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement, params in unique.items():
            cursor.execute(prefix + statement, params)
            lines = [" ".join(str(c) for c in row) for row in cursor.fetchall()]
            print("\n" + " ".join(statement.split())[:300])
            for line in lines:
                print("    " + line)
    finally:
        raw.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="Requests per page.")
    parser.add_argument("--plans", action="store_true", help="Print each query's plan.")
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    stores = ["sqlite"] if args.sqlite_only else ["sqlite", "postgres"]
    with tempfile.TemporaryDirectory() as workdir:
        for name in stores:
            try:
                context = database(name, Path(workdir))
                url = context.__enter__()
            except Exception as exc:
                print(f"\n{name}: skipped ({type(exc).__name__}: {exc})")
                continue
            try:
                engine = migrated_engine(url)
                started = time.perf_counter()
                fill(engine, args.jobs, args.batches)
                print(
                    f"\n{name}: filled {args.jobs:,} jobs over {args.batches} batches in "
                    f"{time.perf_counter() - started:.1f} s"
                )
                store = JobStore(engine)
                report(name, args.jobs, asyncio.run(time_pages(store, args.requests)))
                if args.plans:
                    plans(engine)
                engine.dispose()
            finally:
                context.__exit__(None, None, None)


if __name__ == "__main__":
    main()
