"""Reading the status database's derived state whole, for tests: the counts the database keeps
beside a fresh count of the jobs, and the inventory as plain rows."""

from __future__ import annotations

import contextlib
import importlib
from collections import Counter
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

#: (batch, account, priority, state, code) -> (jobs, calls)
Counts = dict[tuple[str, str, str, str, str], tuple[int, int]]


@contextlib.contextmanager
def _connected(bind: Engine | Connection) -> Iterator[Connection]:
    """``bind`` itself if it is a connection (so reads share its snapshot), else a new one."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.connect() as connection:
            yield connection


def kept_counts(bind: Engine | Connection) -> Counts:
    """The counts the database keeps (rows of zero left out)."""
    with _connected(bind) as connection:
        rows = connection.execute(
            text("SELECT batch_id, account, priority, state, code, jobs, calls FROM job_counts")
        ).all()
    return {
        (batch, account, priority, state, code): (int(jobs), int(calls))
        for batch, account, priority, state, code, jobs, calls in rows
        if jobs or calls
    }


def recounted(bind: Engine | Connection) -> Counts:
    """The same counts, worked out afresh from the jobs."""
    jobs: Counter[tuple[str, str, str, str, str]] = Counter()
    calls: Counter[tuple[str, str, str, str, str]] = Counter()
    with _connected(bind) as connection:
        rows = connection.execute(
            text(
                "SELECT batch_id, account, priority, CAST(status AS VARCHAR(16)), "
                "dispatched_at IS NULL, error_code, calls_left FROM provisioning_jobs"
            )
        ).all()
    for batch, account, priority, status, undispatched, code, left in rows:
        state = ("ready" if undispatched else "dispatched") if status == "queued" else status
        key = (batch or "", account, priority, state, code or "")
        jobs[key] += 1
        calls[key] += int(left)
    return {key: (jobs[key], calls[key]) for key in jobs}


def inventory(engine: Engine) -> dict[str, set[tuple[Any, ...]]]:
    """The inventory's rows (times left out), by table."""
    queries = {
        "sites": "SELECT account, domain, timezone, origin, job_id FROM inventory_sites",
        "goals": "SELECT account, domain, natural_key, goal_id, goal_type, event_name, "
        "page_path, display_name FROM inventory_goals",
        "links": "SELECT account, domain, name, url FROM inventory_links",
    }
    with engine.connect() as connection:
        return {
            name: {tuple(row) for row in connection.execute(text(query)).all()}
            for name, query in queries.items()
        }


def migration(revision: str) -> ModuleType:
    """A migration's module (their file names start with a digit)."""
    from pathlib import Path

    versions = Path(importlib.import_module("worker.jobs.migrations.versions").__path__[0])
    [path] = versions.glob(f"{revision}_*.py")
    return importlib.import_module(f"worker.jobs.migrations.versions.{path.stem}")


def rebuild_inventory(connection: Connection) -> None:
    """Empty the inventory and rebuild it from the jobs, as migration 0006 does."""
    for table in ("inventory_links", "inventory_goals", "inventory_sites"):
        connection.execute(text(f"DELETE FROM {table}"))
    migration("0006").backfill_inventory(connection)


def record_site(
    store: Any,
    domain: str,
    *,
    goals: dict[str, int] | None = None,
    links: dict[str, str] | None = None,
    account: str = "default",
    batch: str = "b1",
    managed_set: str | None = None,
    timezone: str = "Europe/Berlin",
    props: tuple[str, ...] = (),
    guests: dict[str, str] | None = None,
    tracker: dict[str, Any] | None = None,
    goal_props: dict[str, dict[str, str]] | None = None,
) -> str:
    """Run a provision_site job of ``domain`` to success without an API: what a worker records
    once Plausible made the site, its event goals (name -> id) and shared links (name -> URL).
    ``managed_set``: the job is that desired-state set's; ``props`` and ``guests`` (email ->
    role) the custom properties and guests it made; ``tracker`` the tracker configuration
    Plausible answered it; ``goal_props`` the custom properties of its goals (event name ->
    properties). Returns the job's id."""
    from worker.jobs.specs import (
        GoalRecord,
        GoalSpec,
        GuestSpec,
        JobRequest,
        Progress,
        SiteRecord,
    )
    from worker.jobs.states import Operation

    goals = goals or {}
    links = links or {}
    goal_props = goal_props or {}
    request = JobRequest(
        operation=Operation.provision_site,
        domain=domain,
        account=account,
        goals=tuple(
            GoalSpec(goal_type="event", event_name=name, custom_props=goal_props.get(name, {}))
            for name in goals
        ),
        shared_links=tuple(links),
        custom_props=props,
        guests=tuple(GuestSpec(email=e, role=r) for e, r in (guests or {}).items()),  # type: ignore[arg-type]
        tracker_script_configuration=tracker,
        managed_set=managed_set,
    )
    job_id = str(store.enqueue(request, batch=batch).job.id)
    assert job_id in store.admit({job_id: {}})
    claim = store.claim(job_id, lease_seconds=60)
    assert claim is not None
    progress = Progress(
        site=SiteRecord(domain=domain, timezone=timezone),
        goals={
            f"event:{name}": GoalRecord(
                id=goal_id,
                goal_type="event",
                event_name=name,
                display_name=name,
                custom_props=goal_props.get(name, {}),
            )
            for name, goal_id in goals.items()
        },
        shared_links=links,
        custom_props=list(props),
        guests=dict(guests or {}),
        tracker=tracker,
    )
    store.succeed(claim, progress)
    return job_id
