"""SQLite plans the scheduler's statements on statistics: a new connection gathers them when the
database has none, and ``optimize`` refreshes them. Without them, admitting a window's jobs by id
scanned an index of every queued job (a second a tick at a million)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import insert, text

from testkit.databases import migrated_engine
from worker.jobs.db import make_engine, optimize, table_of
from worker.jobs.intake import job_values
from worker.jobs.models import ProvisioningJob
from worker.jobs.specs import JobRequest
from worker.jobs.states import Operation, Priority
from worker.times import utcnow

ADMIT = (
    "UPDATE provisioning_jobs SET dispatched_at = :now WHERE id IN (:a, :b, :c) "
    "AND status = 'queued' AND dispatched_at IS NULL"
)


def add_queued(url: str, jobs: int, first: int = 0) -> list[str]:
    """``jobs`` queued jobs added to the database; their ids."""
    engine = migrated_engine(url)
    now = utcnow()
    rows = [
        job_values(
            JobRequest(operation=Operation.provision_site, domain=f"s{n}.example.com"),
            key=f"evt_{n}",
            batch_id="batch",
            now=now,
            priority=Priority.bulk,
        )
        for n in range(first, first + jobs)
    ]
    with engine.begin() as connection:
        connection.execute(insert(table_of(ProvisioningJob)), rows)
    engine.dispose()
    return [row["id"] for row in rows]


def statistics(url: str) -> int | None:
    """The number of jobs SQLite's statistics give (sampled: about right); None without them."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        try:
            row = connection.execute(
                "SELECT stat FROM sqlite_stat1 WHERE idx = 'ix_provisioning_jobs_status'"
            ).fetchone()
        except sqlite3.OperationalError:  # no such table
            return None
    return int(row[0].split()[0]) if row else None


def admission_plan(url: str, ids: list[str]) -> str:
    engine = make_engine(url)
    with engine.connect() as connection:
        steps = connection.execute(
            text("EXPLAIN QUERY PLAN " + ADMIT),
            {"now": utcnow(), "a": ids[0], "b": ids[1], "c": ids[2]},
        ).all()
    engine.dispose()
    return " ".join(str(step[-1]) for step in steps)


def test_a_connection_to_a_database_without_statistics_gathers_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plans.db'}"
    ids = add_queued(url, 3000)
    with sqlite3.connect(tmp_path / "plans.db") as connection:
        connection.execute("DROP TABLE IF EXISTS sqlite_stat1")
    assert statistics(url) is None
    plan = admission_plan(url, ids)
    assert (statistics(url) or 0) > 2000  # sampled: about 3000
    assert "(id=?)" in plan
    assert "admission" not in plan


def test_optimize_refreshes_statistics_that_went_stale(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plans.db'}"
    add_queued(url, 10)
    engine = make_engine(url)
    with sqlite3.connect(tmp_path / "plans.db") as connection:
        connection.execute("DROP TABLE IF EXISTS sqlite_stat1")
    with engine.connect() as connection:  # a new connection gathers them: 10 jobs
        connection.exec_driver_sql("SELECT 1")
    assert statistics(url) == 10
    add_queued(url, 2000, first=10)
    assert statistics(url) == 10
    optimize(engine)
    assert (statistics(url) or 0) > 1000  # sampled: about 2010
    engine.dispose()
