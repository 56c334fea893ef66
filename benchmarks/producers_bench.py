"""Producer throughput, on demand: ``python benchmarks/producers_bench.py``.

1. rows/s importing 100,000 signup rows into SQLite and into PostgreSQL (``--postgres`` URL of a
   server where a scratch database may be created and dropped);
2. status GET requests/s and p99 latency at concurrency 50 against a real ``provision serve``
   subprocess on loopback (a SQLite or PostgreSQL status table of 1,000 jobs, no broker
   traffic: GETs only), driven by wrk when it is installed (``apt-get install wrk``), else by an
   httpx client in this process.

``--only status`` skips the imports; ``--serve-from DIR`` serves the code in DIR instead (e.g.
``git archive main | tar -x -C /tmp/main``), to compare two versions in one run:

    python benchmarks/producers_bench.py --only status --status-store sqlite,postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from producers.importer import import_file  # noqa: E402
from testkit.databases import migrated_engine  # noqa: E402
from worker.jobs.store import JobStore  # noqa: E402

TOKEN = "bench-token"
#: The status GETs' table: migrated, 1,000 jobs imported; prints their ids.
SEED = """
import json, sys
from pathlib import Path
from producers.importer import import_file
from testkit.databases import migrated_engine
from worker.jobs.store import JobStore

store = JobStore(migrated_engine(sys.argv[1]))
import_file(store, Path(sys.argv[2]))
print(json.dumps([job.id for job in store.list_jobs(limit=1000)]))
store.engine.dispose()
"""


def write_file(path: Path, rows: int) -> None:
    with path.open("w") as handle:
        for n in range(rows):
            event = {
                "id": f"evt_{n}",
                "domain": f"site{n}.example.com",
                "timezone": "Europe/Berlin",
                "goals": [
                    {"goal_type": "event", "event_name": "Signup"},
                    {"goal_type": "page", "page_path": "/pricing/*"},
                ],
                "shared_links": ["WordPress"],
            }
            handle.write(json.dumps(event) + "\n")


def bench_import(url: str, path: Path, rows: int) -> float:
    store = JobStore(migrated_engine(url))
    started = time.perf_counter()
    summary = import_file(store, path)
    elapsed = time.perf_counter() - started
    assert summary.queued == rows, summary.line()
    store.engine.dispose()
    return rows / elapsed


def bench_import_postgres(admin_url: str, path: Path, rows: int) -> float:
    with scratch_postgres(admin_url) as url:
        return bench_import(url, path, rows)


def run_wrk(base: str, ref: str, concurrency: int) -> tuple[float, float]:
    """wrk, when installed: a C client leaves the 2 cores to the server, so the numbers say more
    about the service than the Python client below does."""
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{concurrency}",
            "-d10s",
            "--latency",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            f"{base}/jobs/{ref}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def hammer(base: str, refs: list[str], total: int, concurrency: int) -> tuple[float, float]:
    latencies: list[float] = []
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, limits=limits
    ) as client:

        async def worker() -> None:
            for n in counter:
                start = time.perf_counter()
                response = await client.get(f"/jobs/{refs[n % len(refs)]}")
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return total / elapsed, latencies[int(len(latencies) * 0.99) - 1] * 1000


def bench_status(
    url: str,
    tmp: Path,
    requests: int,
    concurrency: int,
    serve_from: Path = ROOT,
    access_log: bool = False,
) -> tuple[float, float]:
    path = tmp / "status.jsonl"
    write_file(path, 1000)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "PROVISIONER_DATABASE_URL": url,
        "PROVISIONER_API_TOKEN": TOKEN,
        "PROVISIONER_BROKER_URL": "memory://",
        "PYTHONPATH": os.pathsep.join(
            [str(serve_from), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        # A line per request costs a fifth of the rate; a proxy in front usually logs them.
        "PROVISIONER_ACCESS_LOG": "1" if access_log else "0",
    }
    # Imported by the code that serves, so the schema is the one it expects.
    seeded = subprocess.run(
        [sys.executable, "-c", SEED, url, str(path)],
        cwd=serve_from,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    refs: list[str] = json.loads(seeded.stdout.strip().splitlines()[-1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "provision.cli", "serve", "--port", str(port)],
        cwd=serve_from,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/jobs/{refs[0]}", headers={"Authorization": f"Bearer {TOKEN}"})
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if shutil.which("wrk"):
            return run_wrk(base, refs[0], concurrency)
        return asyncio.run(hammer(base, refs, requests, concurrency))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def status_database(
    store: str, tmp: Path, admin_url: str
) -> contextlib.AbstractContextManager[str]:
    if store == "sqlite":
        return contextlib.nullcontext(f"sqlite:///{tmp / 'serve.db'}")
    return scratch_postgres(admin_url)


@contextlib.contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    name = f"prov_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--only", choices=["import", "status"], help="One part only.")
    parser.add_argument(
        "--status-store",
        default="sqlite",
        help="Status table(s) of the GET part: sqlite,postgresql",
    )
    parser.add_argument("--serve-from", type=Path, default=ROOT, help="Code that serves the GETs.")
    parser.add_argument("--access-log", action="store_true", help="Serve with the access log.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="producers-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        if args.only != "status":
            path = tmp / "signups.jsonl"
            write_file(path, args.rows)
            sqlite_url = f"sqlite:///{tmp / 'b.db'}"
            print(
                f"import {args.rows} rows, SQLite:     {bench_import(sqlite_url, path, args.rows):,.0f} rows/s"
            )
            print(
                f"import {args.rows} rows, PostgreSQL: {bench_import_postgres(args.postgres, path, args.rows):,.0f} rows/s"
            )
        if args.only == "import":
            return
        for store in args.status_store.split(","):
            with status_database(store, tmp, args.postgres) as url:
                rps, p99 = bench_status(
                    url, tmp, args.requests, args.concurrency, args.serve_from, args.access_log
                )
            print(
                f"GET /jobs/{{id}} at concurrency {args.concurrency}, {store}: {rps:,.0f} requests/s, p99 {p99:.1f} ms"
            )


if __name__ == "__main__":
    main()
