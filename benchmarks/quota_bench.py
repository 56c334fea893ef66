"""The quota scheduler against the sandbox, with real ``provision worker`` processes.

Run on demand (not a test); it takes about 10 minutes (``--quick``: about 4):

    .venv/bin/python benchmarks/quota_bench.py [--quick] [--store postgres|sqlite]
        [--concurrency 8] [--pool threads|prefork] [--guard 0.6] [--logs DIR]

Each scenario resets the sandbox (``python -m sandbox``, Plausible's limits: 60 per 10 s, and a
compressed hour where the hourly limit must bind), starts one worker with the matching
``PROVISIONER_*`` quota settings (otherwise defaults: the threads pool, 8 slots), enqueues work
straight into the status table as the producers do, and reads what reached Plausible from the
sandbox's request log (``/_sandbox/requests``, by the sandbox's clock). It prints one table, and
for the signups the slowest one's job id: ``--logs DIR`` keeps the worker logs that say what held
it up.

- quota use: calls per window against the budget, as sites per window against the theoretical
  maximum (budget / calls per site) and against bulk's share (the budget less one signup's
  calls, which the reserve holds to each window's end), 429s and calls per site; burst-bound
  and hour-bound;
- fairness: windows until a 20-site batch queued behind a 10,000-site batch is done;
- interactive latency: signups arriving while that backlog waits, p50/p95 from enqueue to their
  first API call (the site's creation in the sandbox) and to done;
- robustness: 429s with the sandbox's clock 500 ms ahead or behind ours, and with 200 ms of
  latency per request;
- reaction: our calls wasted per window (429s) while another client of the same team spends part
  of the burst window;
- small limits: signups arriving during an import with a burst limit of 15 per 5 s, enqueue to
  done (the interactive reserve holds at least one signup whatever the limits), with each
  signup's arrival in its window and the calls that window had taken before it; bulk sites per
  window with the import alone and while the signups came.

Uses Redis db 13 (``BENCH_REDIS_URL``; flushed) and a fresh PostgreSQL database (dropped after).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402

from benchmarks.support import database, start_worker  # noqa: E402
from producers.events import parse_event  # noqa: E402
from testkit.databases import migrated_engine  # noqa: E402
from testkit.sandbox_process import SandboxProcess  # noqa: E402
from testkit.services import flush_owned  # noqa: E402
from worker.jobs.intake import NewJob  # noqa: E402
from worker.jobs.states import Priority  # noqa: E402
from worker.jobs.store import JobStore  # noqa: E402
from worker.quota.limiter import TYPICAL_JOB_CALLS  # noqa: E402
from worker.times import as_utc  # noqa: E402
from worker.wakeups import announcer, transport_for  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
BURST, BURST_SECONDS = 60, 10.0
CALLS_PER_SITE = 4
#: What a scenario's reset empties, in an order the foreign keys allow.
RESET_TABLES = (
    "provisioning_jobs",
    "job_counts",
    "batches",
    "quota_windows",
    "account_pauses",
    "worker_processes",
)


def signup(prefix: str, n: int) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{n}",
        "domain": f"{prefix}{n}.bench.example.com",
        "goals": [
            {"goal_type": "event", "event_name": "Signup"},
            {"goal_type": "page", "page_path": "/pricing"},
        ],
        "shared_links": ["Client dashboard"],
    }


@dataclass
class Row:
    scenario: str
    metric: str
    value: str
    target: str = ""


@dataclass
class Bench:
    sandbox: SandboxProcess
    db_url: str
    workdir: Path
    concurrency: int
    guard: float
    pool: str | None = None
    rows: list[Row] = field(default_factory=list)
    worker: subprocess.Popen[bytes] | None = None
    store: JobStore | None = None

    # -- set-up --------------------------------------------------------------------------------

    def reset(self, **sandbox: Any) -> None:
        self.stop_worker()
        self.sandbox.reset()
        self.sandbox.configure(**sandbox)
        if self.store is not None:
            self.store.engine.dispose()
        engine = migrated_engine(self.db_url)
        with engine.begin() as conn:
            # No trigger counts a deleted job: without its counts and batches, a scenario would
            # start with the last one's backlog still counted (ready, dispatched, running), and
            # with its killed worker's processes still registered.
            for table in RESET_TABLES:
                conn.exec_driver_sql(f"DELETE FROM {table}")
        self.store = JobStore(engine)
        # Enqueueing wakes the worker's scheduler, as a producer's store does (make_store).
        self.store.announce = (
            announcer(transport_for(REDIS_URL, self.db_url)) or self.store.announce
        )
        with contextlib.closing(redis.Redis.from_url(REDIS_URL)) as client:
            flush_owned(client, setting="BENCH_REDIS_URL")

    def start_worker(self, **settings: Any) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            PROVISIONER_BROKER_URL=REDIS_URL,
            PROVISIONER_DATABASE_URL=self.db_url,
            PLAUSIBLE_API_KEY=self.sandbox.api_key,
            PLAUSIBLE_BASE_URL=self.sandbox.base_url,
            PROVISIONER_QUOTA_GUARD_SECONDS=str(self.guard),
        )
        for name, value in settings.items():
            env[f"PROVISIONER_{name.upper()}"] = str(value)
        log = self.workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
        pool = ["--pool", self.pool] if self.pool else []
        self.worker = start_worker(env, log, ["--concurrency", str(self.concurrency), *pool])

    def stop_worker(self) -> None:
        if self.worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait()
            self.worker = None

    def enqueue(self, prefix: str, count: int, priority: Priority, batch: str | None) -> None:
        assert self.store is not None
        jobs = [parse_event(signup(prefix, n)).job(priority) for n in range(count)]
        for start in range(0, count, 1000):
            chunk: list[NewJob] = jobs[start : start + 1000]
            self.store.enqueue_many(chunk, batch=batch)

    def requests(self, since: float = 0.0) -> list[tuple[float, int, str | None]]:
        log = self.sandbox.admin.get("/_sandbox/requests", params={"since": since}).json()
        return [(t, status, bucket) for t, status, bucket in log["requests"]]

    def wait_windows(self, windows: int, seconds: float = BURST_SECONDS) -> None:
        """Until ``windows`` whole windows have passed since the first request."""
        deadline = time.monotonic() + windows * seconds + 60
        while not (log := self.requests()):
            if time.monotonic() > deadline:
                raise RuntimeError("no request reached the sandbox")
            time.sleep(0.2)
        first = math.floor(log[0][0] / seconds)
        until = (first + windows + 1) * seconds + 0.5
        time.sleep(max(0.0, until - (time.time() + self.offset())))

    def offset(self) -> float:
        return float(self.sandbox.state()["settings"]["clock_offset_ms"]) / 1000

    def add(self, scenario: str, metric: str, value: object, target: str = "") -> None:
        self.rows.append(Row(scenario, metric, str(value), target))
        print(f"  {scenario}: {metric} = {value}", flush=True)


def windows_of(log: list[tuple[float, int, str | None]], seconds: float) -> Counter[int]:
    return Counter(math.floor(t / seconds) for t, _, _ in log)


def interior(counts: Counter[int]) -> list[int]:
    """Counts of the windows after the first (partial) and before the last (partial)."""
    keys = sorted(counts)
    return [counts[k] for k in range(keys[0] + 1, keys[-1])] if len(keys) > 2 else []


# -- scenarios ---------------------------------------------------------------------------------


def quota_use(bench: Bench, windows: int) -> None:
    name = "quota use, burst-bound"
    bench.reset(burst_limit=BURST, burst_seconds=BURST_SECONDS, hourly_limit=10**7)
    bench.enqueue("burst", (windows + 3) * BURST // CALLS_PER_SITE, Priority.bulk, "burst")
    bench.start_worker(burst_limit=BURST, burst_seconds=BURST_SECONDS, hourly_limit=10**7)
    bench.wait_windows(windows)
    log = bench.requests()
    bench.stop_worker()
    report_use(bench, name, log, BURST_SECONDS, BURST)

    name = "quota use, hour-bound"
    hour, hourly = 20.0, 80
    bench.reset(burst_limit=BURST, hourly_limit=hourly, hour_seconds=hour)
    bench.enqueue("hour", (windows + 3) * hourly // CALLS_PER_SITE, Priority.bulk, "hour")
    bench.start_worker(burst_limit=BURST, hourly_limit=hourly, hour_seconds=hour)
    bench.wait_windows(max(3, windows // 2), hour)
    log = bench.requests()
    bench.stop_worker()
    report_use(bench, name, log, hour, hourly)


def report_use(
    bench: Bench, name: str, log: list[tuple[float, int, str | None]], seconds: float, budget: int
) -> None:
    refused = sum(1 for _, status, _ in log if status == 429)
    counts = interior(windows_of([e for e in log if e[1] != 429], seconds))
    theoretical = budget / CALLS_PER_SITE
    # Bulk jobs never take the calls of one signup, held to each window's end.
    bulk_share = (budget - TYPICAL_JOB_CALLS) / CALLS_PER_SITE
    sites = [n / CALLS_PER_SITE for n in counts]
    bench.add(name, "windows measured", len(counts))
    bench.add(name, "calls per window (min/mean)", f"{min(counts)}/{statistics.mean(counts):.1f}")
    bench.add(
        name,
        "sites per window / theoretical",
        f"{statistics.mean(sites):.2f} / {theoretical:g} "
        f"({100 * statistics.mean(sites) / theoretical:.1f}%)",
    )
    bench.add(
        name,
        "sites per window / bulk's share (all but one signup's calls)",
        f"{statistics.mean(sites):.2f} / {bulk_share:g} "
        f"({100 * statistics.mean(sites) / bulk_share:.1f}%)",
        ">= 99%",
    )
    bench.add(name, "429s", refused, "0")
    created = len(bench.sandbox.state()["sites"])
    answered = sum(1 for _, status, _ in log if status == 200)
    bench.add(name, "calls per site (200s / sites created)", f"{answered / max(1, created):.2f}")


def fairness_and_latency(bench: Bench, signups: int, big: int) -> None:
    name = "fairness"
    bench.reset(burst_limit=BURST, burst_seconds=BURST_SECONDS, hourly_limit=10**7)
    bench.enqueue("big", big, Priority.bulk, "big")
    bench.enqueue("small", 20, Priority.bulk, "small")
    bench.start_worker(burst_limit=BURST, burst_seconds=BURST_SECONDS, hourly_limit=10**7)
    store = bench.store
    assert store is not None
    deadline = time.monotonic() + 120
    while not store.batch_summary("small").done:
        if time.monotonic() > deadline:
            raise RuntimeError("the small batch never finished")
        time.sleep(0.2)
    log = bench.requests()
    last = max(as_utc(j.finished_at) for j in store.batch("small"))  # type: ignore[type-var]
    elapsed = last.timestamp() + bench.offset() - log[0][0]  # type: ignore[union-attr]
    first, finished = (math.floor(t / BURST_SECONDS) for t in (log[0][0], log[0][0] + elapsed))
    bench.add(
        name,
        f"windows until a 20-site batch behind {big:,} is done (elapsed; windows touched)",
        f"{elapsed / BURST_SECONDS:.2f}; {finished - first + 1}",
        "<= 3",
    )

    name = "interactive latency"
    started = time.time()
    ids = []
    rng = random.Random(7)
    for n in range(signups):
        time.sleep(rng.uniform(4.0, 9.0))
        ids.append(
            store.enqueue(parse_event(signup("signup", n)).request, key=f"signup-{n}").job.id
        )
    deadline = time.monotonic() + 120
    while not all(j.status.done for j in (store.get(i) for i in ids) if j is not None):
        if time.monotonic() > deadline:
            raise RuntimeError("signups did not finish")
        time.sleep(0.2)
    sites = {s["domain"]: s["inserted_at"] for s in bench.sandbox.state()["sites"]}
    first_call, done = [], []
    for job_id in ids:
        job = store.get(job_id)
        assert job is not None
        created = as_utc(job.created_at).timestamp()  # type: ignore[union-attr]
        first_call.append(sites[job.domain] - bench.offset() - created)
        done.append(as_utc(job.finished_at).timestamp() - created)  # type: ignore[union-attr]
    bulk_calls = interior(
        windows_of([e for e in bench.requests(started) if e[1] == 200], BURST_SECONDS)
    )
    bench.stop_worker()
    print(f"  first-call latencies (s): {[round(x, 2) for x in sorted(first_call)]}", flush=True)
    print_slowest(bench, ids, done)
    bench.add(name, "signups", len(ids))
    bench.add(
        name,
        "enqueue -> first call p50/p95 (s)",
        f"{pct(first_call, 50):.2f}/{pct(first_call, 95):.2f}",
        "p95 <= 1 s",
    )
    bench.add(name, "enqueue -> done p50/p95 (s)", f"{pct(done, 50):.2f}/{pct(done, 95):.2f}")
    bench.add(
        name, "calls per window meanwhile (mean)", f"{statistics.mean(bulk_calls):.1f} of {BURST}"
    )
    remaining = store.batch_summary("big").counts["queued"]
    bench.add(name, "backlog still queued at the end", f"{remaining:,}")


def small_limits(bench: Bench, signups: int, trace: bool = False) -> None:
    """Signups arriving while an import runs under a small custom limit (15 calls per 5 s,
    where a 10 % reserve would be 1.5 calls, less than one signup). Per signup: when it arrived
    in its window and what the window had taken by then; ``trace``: the sites each window made."""
    name = "15 per 5 s"
    limits = {"burst_limit": 15, "burst_seconds": 5.0, "hourly_limit": 10**7}
    bench.reset(**limits)
    bench.enqueue("bulk", 2000, Priority.bulk, "bulk")
    bench.start_worker(**limits)
    store = bench.store
    assert store is not None
    seconds = limits["burst_seconds"]
    bench.wait_windows(4, seconds=seconds)  # the import has the windows to itself for a while
    alone_until = time.time() + bench.offset()
    ids = []
    rng = random.Random(11)
    for n in range(signups):
        ids.append(store.enqueue(parse_event(signup("small", n)).request, key=f"small-{n}").job.id)
        time.sleep(rng.uniform(2.0, 4.0))
    deadline = time.monotonic() + 120
    while not all(j.status.done for j in (store.get(i) for i in ids) if j is not None):
        if time.monotonic() > deadline:
            raise RuntimeError("signups did not finish")
        time.sleep(0.2)
    log = [e for e in bench.requests() if e[1] != 429]
    sites = bench.sandbox.state()["sites"]
    bench.stop_worker()
    done = []
    calls = windows_of(log, seconds)
    print(
        "  signup: arrival (s into its window), calls of that window before it / in all,",
        flush=True,
    )
    print("          enqueue -> dispatched, -> done (s)", flush=True)
    for job_id in ids:
        job = store.get(job_id)
        assert job is not None
        created = as_utc(job.created_at).timestamp() + bench.offset()  # type: ignore[union-attr]
        dispatched = as_utc(job.dispatched_at).timestamp() + bench.offset()  # type: ignore[union-attr]
        finished = as_utc(job.finished_at).timestamp() + bench.offset()  # type: ignore[union-attr]
        done.append(finished - created)
        window = math.floor(created / seconds)
        before = sum(1 for t, _, _ in log if math.floor(t / seconds) == window and t < created)
        print(
            f"    {job.domain.split('.')[0]}: {created - window * seconds:.2f}, "
            f"{before}/{calls[window]}, {dispatched - created:.2f}, {finished - created:.2f}",
            flush=True,
        )
    # Bulk sites created per whole window, the import alone and while signups came.
    bulk = windows_of(
        [(s["inserted_at"], 200, None) for s in sites if s["domain"].startswith("bulk")], seconds
    )
    first_signup = math.floor(alone_until / seconds)
    last = max(calls)
    alone = [bulk[w] for w in range(min(calls) + 1, first_signup)]
    during = [bulk[w] for w in range(first_signup, last)]
    if trace:
        for w in range(first_signup - 2, last + 1):
            made = sorted(
                (round(s["inserted_at"] - w * seconds, 2), s["domain"].split(".")[0])
                for s in sites
                if math.floor(s["inserted_at"] / seconds) == w
            )
            print(f"    window {w - first_signup}: {calls[w]} calls; sites {made}", flush=True)
    print(f"  enqueue -> done (s): {[round(x, 2) for x in done]}", flush=True)
    print(f"  bulk sites per window, alone: {alone}; with signups: {during}", flush=True)
    print_slowest(bench, ids, done)
    bench.add(name, "signups behind an import", len(ids))
    bench.add(name, "enqueue -> done p50/max (s)", f"{pct(done, 50):.2f}/{max(done):.2f}", "<= 1 s")
    bench.add(
        name,
        "bulk sites per window: import alone / with signups (mean)",
        " / ".join(f"{statistics.mean(n):.2f}" if n else "-" for n in (alone, during)),
    )


def print_slowest(bench: Bench, ids: list[str], seconds: list[float]) -> None:
    """The slowest job's id and where its worker logged, to read what held it up."""
    slowest = max(range(len(ids)), key=seconds.__getitem__)
    print(
        f"  slowest: job {ids[slowest]} ({seconds[slowest]:.2f} s); worker logs in {bench.workdir}",
        flush=True,
    )


def pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)]


def robustness(bench: Bench, windows: int) -> None:
    name = "robustness"
    runs = [
        (f"clock +500 ms, guard {bench.guard:g} s", {"clock_offset_ms": 500}, {}),
        (f"clock -500 ms, guard {bench.guard:g} s", {"clock_offset_ms": -500}, {}),
        ("latency 200 ms", {"latency_ms": 200}, {}),
        ("clock +500 ms, guard 0.3 s", {"clock_offset_ms": 500}, {"quota_guard_seconds": 0.3}),
        ("clock -500 ms, guard 0.3 s", {"clock_offset_ms": -500}, {"quota_guard_seconds": 0.3}),
    ]
    for label, sandbox, worker in runs:
        limits = {"burst_limit": BURST, "burst_seconds": BURST_SECONDS, "hourly_limit": 10**7}
        bench.reset(**limits, **sandbox)
        bench.enqueue("robust", (windows + 3) * BURST // CALLS_PER_SITE, Priority.bulk, "robust")
        bench.start_worker(**limits, **worker)
        bench.wait_windows(windows)
        log = bench.requests()
        bench.stop_worker()
        refused = sum(1 for _, status, _ in log if status == 429)
        counts = interior(windows_of([e for e in log if e[1] != 429], BURST_SECONDS))
        use = 100 * statistics.mean(counts) / BURST if counts else 0.0
        bench.add(name, f"{label}: 429s, use", f"{refused}, {use:.1f}%", "0 (default guard)")


def reaction(bench: Bench, windows: int) -> None:
    name = "reaction"
    limits = {"burst_limit": BURST, "burst_seconds": BURST_SECONDS, "hourly_limit": 10**7}
    bench.reset(**limits)
    bench.sandbox.add_key(key="stats-script")  # another user of the same team's quota
    bench.enqueue("react", (windows + 3) * BURST // CALLS_PER_SITE, Priority.bulk, "react")
    theirs = Counter[int]()
    stop = threading.Event()

    def other_client() -> None:
        with httpx.Client(
            base_url=bench.sandbox.base_url, headers={"authorization": "Bearer stats-script"}
        ) as client:
            rng = random.Random(3)
            while not stop.is_set():
                status = client.get("/api/v1/sites").status_code
                theirs[status] += 1
                stop.wait(rng.uniform(0, 2 * BURST_SECONDS / 15))  # about 15 a window

    thread = threading.Thread(target=other_client, daemon=True)
    bench.start_worker(**limits)
    thread.start()
    bench.wait_windows(windows)
    stop.set()
    thread.join()
    log = bench.requests()
    bench.stop_worker()
    refused = windows_of([e for e in log if e[1] == 429], BURST_SECONDS)
    ours = sum(refused.values()) - theirs[429]
    measured = len(windows_of(log, BURST_SECONDS))
    bench.add(
        name,
        "windows; other client's calls (refused)",
        f"{measured}; {sum(theirs.values())} ({theirs[429]})",
    )
    bench.add(
        name,
        f"our calls wasted per window (worker processes: {bench.concurrency})",
        f"{ours / max(1, measured):.2f} (total {ours})",
        f"<= {bench.concurrency}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer windows and signups")
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pool", choices=["threads", "prefork"], help="default: the worker's")
    parser.add_argument("--guard", type=float, default=0.6, help="PROVISIONER_QUOTA_GUARD_SECONDS")
    parser.add_argument("--big", type=int, default=10_000, help="sites in the large bulk batch")
    parser.add_argument(
        "--only", action="append", choices=["use", "fair", "robust", "react", "small"]
    )
    parser.add_argument(
        "--trace", action="store_true", help="small: the sites each window made, and when"
    )
    parser.add_argument(
        "--logs", type=Path, help="keep the worker logs here (default: deleted at the end)"
    )
    args = parser.parse_args()
    windows = 3 if args.quick else 6
    only = set(args.only or ["use", "fair", "robust", "react", "small"])
    with (
        tempfile.TemporaryDirectory() as tmp,
        SandboxProcess(api_key="bench-key", stats_api_key=None, other_team_api_key=None) as sandbox,
        database(args.store, Path(tmp)) as db_url,
    ):
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        bench = Bench(sandbox, db_url, logs, args.concurrency, args.guard, args.pool)
        try:
            if "use" in only:
                quota_use(bench, windows)
            if "fair" in only:
                fairness_and_latency(bench, 8 if args.quick else 20, args.big)
            if "robust" in only:
                robustness(bench, windows)
            if "react" in only:
                reaction(bench, windows)
            if "small" in only:
                small_limits(bench, 4 if args.quick else 8, args.trace)
        finally:
            bench.stop_worker()
            if bench.store is not None:
                bench.store.engine.dispose()
    print(
        f"\nstore={args.store} pool={args.pool or 'default'} concurrency={args.concurrency} "
        f"guard={args.guard:g}s cpus={os.cpu_count()}"
    )
    widths = [max(len(getattr(r, f)) for r in bench.rows) for f in ("scenario", "metric", "value")]
    header = ("SCENARIO", "METRIC", "VALUE", "TARGET")
    widths = [max(w, len(h)) for w, h in zip(widths, header[:3], strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(header[:3], widths, strict=True)) + "  TARGET")
    for r in bench.rows:
        cells = (r.scenario, r.metric, r.value)
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + f"  {r.target}")


if __name__ == "__main__":
    main()
