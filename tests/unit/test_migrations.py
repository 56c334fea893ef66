"""Migrations: an empty database upgrades to head, the models agree with the migrations, and a
database made before migrations existed (or at an older revision) upgrades with its rows kept."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from testkit.sandbox_process import REPO_ROOT
from worker.errors import ConfigurationError
from worker.jobs.db import (
    BASELINE_REVISION,
    current_revision,
    make_engine,
    require_current,
    upgrade,
)
from worker.jobs.revisions import head_revision


@pytest.fixture(params=["sqlite", "postgres"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'status.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    yield engine
    engine.dispose()


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return current_revision(connection)


def schema_drift(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def test_an_empty_database_upgrades_to_head_and_matches_the_models(empty_engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match="provision db upgrade"):
        require_current(empty_engine)
    upgrade(empty_engine)
    assert revision_of(empty_engine) == head_revision()
    assert schema_drift(empty_engine) == []
    require_current(empty_engine)
    upgrade(empty_engine)  # a second upgrade is a no-op
    assert revision_of(empty_engine) == head_revision()


def test_a_database_made_before_migrations_is_recognised_and_upgraded(
    empty_engine: Engine,
) -> None:
    upgrade(empty_engine, BASELINE_REVISION)
    with empty_engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))  # as create_all left it
    assert revision_of(empty_engine) == BASELINE_REVISION
    upgrade(empty_engine)
    assert revision_of(empty_engine) == head_revision()
    assert schema_drift(empty_engine) == []


def test_revisions_are_read_as_alembic_reads_them(empty_engine: Engine) -> None:
    """``head_revision`` and ``current_revision`` read the scripts and the version table
    without Alembic; they agree with Alembic at every revision."""
    from alembic.script import ScriptDirectory

    from worker.jobs.db import _config

    assert head_revision() == ScriptDirectory.from_config(_config()).get_current_head()
    assert revision_of(empty_engine) is None
    for script in reversed(list(ScriptDirectory.from_config(_config()).walk_revisions())):
        upgrade(empty_engine, script.revision)
        with empty_engine.connect() as connection:
            alembic_says = MigrationContext.configure(connection).get_current_revision()
        assert revision_of(empty_engine) == alembic_says == script.revision


def test_a_missing_sqlite_file_is_reported_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    engine = make_engine(f"sqlite:///{path}")
    with pytest.raises(ConfigurationError, match="no status database at"):
        require_current(engine)
    assert not path.exists()


def test_db_upgrade_command_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"PATH": "/usr/bin:/bin", "PROVISIONER_DATABASE_URL": url}
    run = [sys.executable, "-m", "provision", "db"]
    behind = subprocess.run([*run, "check"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert behind.returncode == 2
    assert behind.stderr.strip().splitlines()[-1].startswith("Error: no status database at")
    done = subprocess.run([*run, "upgrade"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"revision {head_revision()}" in done.stdout
    check = subprocess.run([*run, "check"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_rows_written_before_the_quota_scheduler_are_kept_and_classed(
    empty_engine: Engine,
) -> None:
    from worker.jobs.states import JobStatus, Priority
    from worker.jobs.store import JobStore

    upgrade(empty_engine, BASELINE_REVISION)  # the schema as main had it before this revision
    columns = (
        "id, idempotency_key, operation, domain, batch_id, request, fingerprint, status, "
        "progress, attempts, dispatch_count, created_at, updated_at"
    )
    row = (
        ":id, :key, 'provision_site', :domain, :batch, :request, 'f', :status, :progress, 0, 0, "
        "'2026-11-30 10:00:00+00:00', '2026-11-30 10:00:00+00:00'"
    )
    with empty_engine.begin() as connection:
        for n, (batch, status) in enumerate([("b1", "queued"), (None, "succeeded")]):
            connection.execute(
                text(f"INSERT INTO provisioning_jobs ({columns}) VALUES ({row})"),
                {
                    "id": f"job{n}",
                    "key": f"evt_{n}",
                    "domain": f"s{n}.example.com",
                    "batch": batch,
                    "request": json.dumps(
                        {"operation": "provision_site", "domain": f"s{n}.example.com"}
                    ),
                    "status": status,
                    "progress": json.dumps(
                        {"site": {"domain": f"s{n}.example.com", "timezone": "UTC"}}
                    ),
                },
            )
    upgrade(empty_engine)
    assert schema_drift(empty_engine) == []
    store = JobStore(empty_engine)
    imported, single = store.get("job0"), store.get("job1")
    assert imported is not None
    assert single is not None
    assert (imported.account, imported.priority, imported.status) == (
        "default",
        Priority.bulk,  # written by an import: it had a batch
        JobStatus.queued,
    )
    assert (single.account, single.priority) == ("default", Priority.interactive)
    assert single.progress.site is not None
    assert single.progress.site.domain == "s1.example.com"
    # The old queued row is work the scheduler now sees.
    assert [j.id for j in store.ready_jobs(["default"], Priority.bulk, limit=5)] == ["job0"]


def test_every_revision_downgrades_and_upgrades_again(empty_engine: Engine) -> None:
    from alembic import command

    from worker.jobs.db import _config

    upgrade(empty_engine)
    with empty_engine.begin() as connection:
        command.downgrade(_config(connection), BASELINE_REVISION)
    assert revision_of(empty_engine) == BASELINE_REVISION
    upgrade(empty_engine)
    assert schema_drift(empty_engine) == []


def test_a_database_of_the_previous_schema_gets_batches_counts_and_its_inventory(
    empty_engine: Engine,
) -> None:
    """Migration 0006 on rows written by 0005's schema: every job joins a batch (a day's
    ``legacy-`` batch when it had none), the counts equal a fresh count, unfinished jobs know
    the calls they still need, and the inventory holds what the jobs' history made."""
    from testkit.inventory import inventory, kept_counts, recounted
    from worker.jobs.store import JobStore

    upgrade(empty_engine, "0005")
    site = {"domain": "shop.example.com", "timezone": "UTC"}
    signup = {"id": 11, "goal_type": "event", "event_name": "Signup", "display_name": "Signup"}
    pricing = {"id": 12, "goal_type": "page", "page_path": "/pricing", "display_name": "Pricing"}
    history = [
        # (batch, operation, domain, status, request extras, progress, finished at)
        ("b1", "provision_site", "shop.example.com", "succeeded", {},
         {"site": site, "goals": {"event:Signup": signup, "page:/pricing": pricing},
          "shared_links": {"Dash": "https://plausible.io/share/shop.example.com?auth=x"}},
         "2026-11-30 10:00:01"),
        (None, "provision_site", "blog.example.com", "succeeded", {},
         {"site": {"domain": "blog.example.com", "timezone": "UTC", "adopted": True,
                   "existed": True}},
         "2026-11-30 10:00:02"),
        (None, "delete_goal", "shop.example.com", "succeeded", {"goal_id": 12},
         {"goal_id": 12, "goal_id_source": "request", "deleted": True}, "2026-11-30 10:00:03"),
        ("b1", "provision_site", "gone.example.com", "succeeded", {},
         {"site": {"domain": "gone.example.com", "timezone": "UTC"}}, "2026-11-30 10:00:04"),
        (None, "delete_site", "gone.example.com", "succeeded", {}, {"deleted": True},
         "2026-11-30 10:00:05"),
        ("b1", "provision_site", "later.example.com", "queued",
         {"goals": [{"goal_type": "event", "event_name": "Signup"}]}, {}, None),
    ]  # fmt: skip
    columns = (
        "id, idempotency_key, operation, domain, batch_id, request, fingerprint, status, "
        "progress, attempts, dispatch_count, created_at, updated_at, finished_at, account, "
        "priority"
    )
    values = (
        ":id, :key, :operation, :domain, :batch, :request, 'f', :status, :progress, 0, 0, "
        "'2026-11-30 10:00:00+00:00', :updated, :finished, 'default', :priority"
    )
    with empty_engine.begin() as connection:
        for n, (batch, operation, domain, status, extra, progress, done) in enumerate(history):
            stamp = f"{done}+00:00" if done else None
            connection.execute(
                text(f"INSERT INTO provisioning_jobs ({columns}) VALUES ({values})"),
                {
                    "id": f"job{n}",
                    "key": f"evt_{n}",
                    "operation": operation,
                    "domain": domain,
                    "batch": batch,
                    "request": json.dumps({"operation": operation, "domain": domain, **extra}),
                    "status": status,
                    "progress": json.dumps(progress),
                    "updated": stamp or "2026-11-30 10:00:00+00:00",
                    "finished": stamp,
                    "priority": "bulk" if batch else "interactive",
                },
            )
    upgrade(empty_engine)
    assert schema_drift(empty_engine) == []
    store = JobStore(empty_engine)
    assert {job.batch_id for job in map(store.get, ["job1", "job2"]) if job} == {"legacy-20261130"}
    legacy = store.batch_summary("legacy-20261130")
    assert legacy.batch is not None
    assert (legacy.batch.source, legacy.total, legacy.counts["succeeded"]) == ("legacy", 3, 3)
    assert store.batch_summary("b1").batch is not None
    assert kept_counts(empty_engine) == recounted(empty_engine)
    later = store.get("job5")
    assert later is not None
    assert later.calls_left == 2  # the site and its goal
    rows = inventory(empty_engine)
    assert rows["sites"] == {
        ("default", "shop.example.com", "UTC", "created", "job0"),
        ("default", "blog.example.com", "UTC", "existed", "job1"),
    }
    assert {(row[1], row[2], row[3]) for row in rows["goals"]} == {
        ("shop.example.com", "event:Signup", 11)
    }
    assert rows["links"] == {
        (
            "default",
            "shop.example.com",
            "Dash",
            "https://plausible.io/share/shop.example.com?auth=x",
        )
    }


def test_goals_recorded_before_0011_read_no_custom_props_and_later_ones_keep_theirs(
    empty_engine: Engine,
) -> None:
    """Migration 0011 on an inventory written by 0010's schema: the goal already recorded reads
    ``{}`` (no job recorded a goal's properties before), a goal recorded after keeps what
    Plausible answered, and the inventory rebuilt from the jobs (0006's replay, which knows
    nothing of the column) still inserts its goals."""
    from testkit.inventory import rebuild_inventory, record_site
    from worker.jobs.store import JobStore

    upgrade(empty_engine, "0010")
    stamp = "'2026-12-07 10:00:00+00:00'"
    with empty_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO inventory_sites (account, domain, timezone, origin, job_id, "
                f"created_at, confirmed_at) VALUES ('default', 'old.example.com', 'UTC', "
                f"'created', 'job0', {stamp}, {stamp})"
            )
        )
        connection.execute(
            text(
                "INSERT INTO inventory_goals (account, domain, natural_key, goal_id, goal_type, "
                "event_name, display_name, job_id, confirmed_at) VALUES ('default', "
                "'old.example.com', 'event:Signup', 7, 'event', 'Signup', 'Signup', 'job0', "
                f"{stamp})"
            )
        )
    upgrade(empty_engine)
    assert schema_drift(empty_engine) == []
    store = JobStore(empty_engine)
    record_site(store, "new.example.com", goals={"Signup": 8}, goal_props={"Signup": {"a": "b"}})

    def props(domain: str) -> list[tuple[str, dict[str, str]]]:
        [view] = store.site(domain)
        return [(goal.natural_key, goal.custom_props) for goal in view.goals]

    assert props("old.example.com") == [("event:Signup", {})]
    assert props("new.example.com") == [("event:Signup", {"a": "b"})]
    with empty_engine.begin() as connection:
        rebuild_inventory(connection)
    assert props("new.example.com") == [("event:Signup", {})]
