"""Pipeline throughput: sites provisioned per second by real ``provision worker`` processes.

Run on demand (not a test):

    /work/venv/bin/python benchmarks/pipeline_throughput.py [--sites 500] [--latency 0 --latency 50]
        [--store sqlite|postgres] [--concurrency N] [--pool threads|prefork]

Each site has 2 goals and 1 shared link, so one job is 4 API calls. For each latency the script
starts a fresh sandbox (``python -m sandbox``, rate limits lifted so they do not cap the number),
a fresh status table and a flushed Redis db, starts ONE worker with the default settings (no
PROVISIONER_* tuning but the quota, lifted to match the sandbox; without --pool/--concurrency:
the threads pool, PROVISIONER_WORKER_CONCURRENCY=8 slots), waits for it to be ready, then enqueues
all sites one by one with ``JobStore.enqueue`` (the worker's scheduler dispatches them) and
polls the status table until every job is done.

Reported: enqueue time, wall time from the first enqueue to the last job finished, sites/s over
that wall time, and the median/p95 job duration (finished_at - started_at).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402

from benchmarks.support import database, start_worker  # noqa: E402
from producers.events import parse_event  # noqa: E402
from testkit.databases import migrated_engine  # noqa: E402
from testkit.sandbox_process import SandboxProcess  # noqa: E402
from testkit.services import flush_owned  # noqa: E402
from worker.jobs.states import JobStatus  # noqa: E402
from worker.jobs.store import JobStore  # noqa: E402
from worker.times import as_utc  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def signup(n: int) -> dict[str, Any]:
    return {
        "id": f"bench-{n}",
        "domain": f"site{n}.bench.example.com",
        "goals": [
            {"goal_type": "event", "event_name": "Signup"},
            {"goal_type": "page", "page_path": "/pricing"},
        ],
        "shared_links": ["Client dashboard"],
    }


def run_once(sites: int, latency_ms: float, store: str, extra: list[str]) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        SandboxProcess() as sandbox,
        database(store, Path(tmp)) as db_url,
    ):
        workdir = Path(tmp)
        sandbox.configure(hourly_limit=10**9, burst_limit=10**9, latency_ms=latency_ms)
        broker = redis.Redis.from_url(REDIS_URL)
        flush_owned(broker, setting="BENCH_REDIS_URL")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            PROVISIONER_BROKER_URL=REDIS_URL,
            PROVISIONER_DATABASE_URL=db_url,
            PLAUSIBLE_API_KEY=sandbox.api_key,
            PLAUSIBLE_BASE_URL=sandbox.base_url,
            PROVISIONER_HOURLY_LIMIT=str(10**9),
            PROVISIONER_BURST_LIMIT=str(10**9),
        )
        engine = migrated_engine(db_url)
        store_ = JobStore(engine)
        events = [parse_event(signup(n)) for n in range(sites)]
        batch_id = uuid.uuid4().hex[:16]
        worker = start_worker(env, workdir / "worker.log", extra)
        try:
            t0 = time.monotonic()
            for event in events:
                store_.enqueue(event.request, key=event.key, batch=batch_id)
            enqueued = time.monotonic() - t0
            while True:
                jobs = store_.batch(batch_id)
                if len(jobs) == sites and all(j.status.done for j in jobs):
                    break
                time.sleep(0.2)
            wall = time.monotonic() - t0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            flush_owned(broker, setting="BENCH_REDIS_URL")
            broker.close()
        state = sandbox.state()
        engine.dispose()
    failed = [j for j in jobs if j.status != JobStatus.succeeded]
    durations = sorted((as_utc(j.finished_at) - as_utc(j.started_at)).total_seconds() for j in jobs)  # type: ignore[operator]
    return {
        "sites": sites,
        "latency_ms": latency_ms,
        "store": store,
        "enqueue_s": round(enqueued, 2),
        "wall_s": round(wall, 2),
        "sites_per_s": round(sites / wall, 1),
        "job_p50_ms": round(statistics.median(durations) * 1000),
        "job_p95_ms": round(durations[int(len(durations) * 0.95) - 1] * 1000),
        "failed": len(failed),
        "sandbox": {
            "sites": len(state["sites"]),
            "goals": len(state["goals"]),
            "links": sum(len(s["shared_links"]) for s in state["sites"]),
            "requests": state["counters"]["total"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument(
        "--latency", type=float, action="append", help="ms; repeatable (default 0 and 50)"
    )
    parser.add_argument("--store", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--pool", help="threads or prefork (default: the worker's, threads)")
    parser.add_argument(
        "--concurrency",
        type=int,
        help="worker processes (default: PROVISIONER_WORKER_CONCURRENCY, 8)",
    )
    args = parser.parse_args()
    extra: list[str] = []
    if args.pool:
        extra += ["--pool", args.pool]
    if args.concurrency:
        extra += ["--concurrency", str(args.concurrency)]
    print(
        f"cpus={os.cpu_count()} worker args={extra or '(defaults: prefork, PROVISIONER_WORKER_CONCURRENCY=8)'}"
    )
    for store in args.store or ["sqlite"]:
        for latency in args.latency or [0.0, 50.0]:
            result = run_once(args.sites, latency, store, extra)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
