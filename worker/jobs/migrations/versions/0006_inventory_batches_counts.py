"""Work apart from state: batches as rows, counts kept by the database, and the inventory.

- ``batches``: every job belongs to one. Jobs without a batch get a ``legacy-YYYYMMDD`` batch of
  the day they were made.
- ``job_counts``: jobs (and the calls they still need) per batch, account, class, state and
  last error code, kept by triggers in the transaction of every change to a job, so nothing
  counts the backlog. ``provisioning_jobs.calls_left`` is what the triggers sum.
- ``inventory_sites``, ``inventory_goals``, ``inventory_links``: what the provisioner knows it
  owns in Plausible, rebuilt here from the jobs' checkpoints in the order they were written.

On SQLite, ``batch_alter_table`` on ``provisioning_jobs`` copies the table and drops its
triggers: a later migration that does so must create them again (``create_triggers``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FINAL = ("succeeded", "failed", "cancelled")
KEY = ("batch_id", "account", "priority", "state", "code")


def upgrade() -> None:
    with op.batch_alter_table("provisioning_jobs") as batch:
        batch.add_column(sa.Column("calls_left", sa.Integer(), nullable=False, server_default="1"))
        batch.create_index(
            "ix_provisioning_jobs_batch_status", ["batch_id", "status", "created_at"]
        )
        batch.create_index("ix_provisioning_jobs_batch_finished", ["batch_id", "finished_at"])
    with op.batch_alter_table("provisioning_jobs") as batch:
        batch.alter_column("calls_left", server_default=None)
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_batches_created", "batches", ["created_at", "id"])
    op.create_table(
        "job_counts",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY),
    )
    # Only the counts that hold jobs: a batch long done leaves rows of zero behind.
    op.create_index(
        "ix_job_counts_open",
        "job_counts",
        ["state", "priority", "account", "batch_id"],
        postgresql_where=sa.text("jobs > 0"),
        sqlite_where=sa.text("jobs > 0"),
    )
    op.create_table(
        "inventory_sites",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "domain"),
    )
    op.create_table(
        "inventory_goals",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("natural_key", sa.String(length=255), nullable=False),
        sa.Column("goal_id", sa.BigInteger(), nullable=False),
        sa.Column("goal_type", sa.String(length=8), nullable=False),
        sa.Column("event_name", sa.String(length=255), nullable=True),
        sa.Column("page_path", sa.String(length=2048), nullable=True),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "domain", "natural_key"),
    )
    op.create_table(
        "inventory_links",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "domain", "name"),
    )
    bind = op.get_bind()
    _backfill_batches(bind)
    _backfill_calls_left(bind)
    _backfill_counts(bind)
    backfill_inventory(bind)
    create_triggers(bind)


def downgrade() -> None:
    drop_triggers(op.get_bind())
    for table in ("inventory_links", "inventory_goals", "inventory_sites", "job_counts"):
        op.drop_table(table)
    op.drop_index("ix_batches_created", table_name="batches")
    op.drop_table("batches")
    with op.batch_alter_table("provisioning_jobs") as batch:
        batch.drop_index("ix_provisioning_jobs_batch_finished")
        batch.drop_index("ix_provisioning_jobs_batch_status")
        batch.drop_column("calls_left")


# -- backfills ----------------------------------------------------------------------------------

JOBS = sa.table(
    "provisioning_jobs",
    sa.column("id", sa.String),
    sa.column("operation", sa.String),
    sa.column("domain", sa.String),
    sa.column("account", sa.String),
    sa.column("batch_id", sa.String),
    sa.column("status", sa.String),
    sa.column("request", sa.JSON),
    sa.column("progress", sa.JSON),
    sa.column("calls_left", sa.Integer),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
    sa.column("finished_at", sa.DateTime(timezone=True)),
)


def _day(bind: sa.engine.Connection) -> Any:
    created: Any = sa.column("created_at")
    if bind.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", created), "YYYYMMDD")
    return sa.func.strftime("%Y%m%d", created)


def _backfill_batches(bind: sa.engine.Connection) -> None:
    day = _day(bind)
    days = bind.execute(
        sa.select(day.label("day")).select_from(JOBS).where(JOBS.c.batch_id.is_(None)).distinct()
    ).scalars()
    for value in list(days):
        bind.execute(
            JOBS.update()
            .where(JOBS.c.batch_id.is_(None), day == value)
            .values(batch_id=f"legacy-{value}")
        )
    bind.execute(
        sa.text(
            "INSERT INTO batches (id, name, source, created_at, last_finished_at) "
            "SELECT batch_id, batch_id, "
            "CASE WHEN batch_id LIKE 'legacy-%' THEN 'legacy' ELSE 'import' END, "
            "min(created_at), max(finished_at) FROM provisioning_jobs GROUP BY batch_id"
        )
    )


def calls_left(request: dict[str, Any], progress: dict[str, Any]) -> int:
    """``worker.quota.permits.calls_needed`` as of this revision, on the stored JSON."""
    operation = request.get("operation")
    if operation == "provision_site":
        site = 0 if progress.get("site") else 1
        done_goals = progress.get("goals") or {}
        goals = 0
        for goal in request.get("goals") or ():
            kind = goal.get("goal_type")
            key = (
                f"event:{goal.get('event_name')}"
                if kind == "event"
                else f"page:{goal.get('page_path')}"
            )
            goals += key not in done_goals
        links = sum(
            name not in (progress.get("shared_links") or {})
            for name in request.get("shared_links") or ()
        )
        return max(1, site + goals + links)
    if operation == "delete_goal":
        known = request.get("goal_id") is not None or progress.get("goal_id") is not None
        return 1 if known else 2
    return 1


def _backfill_calls_left(bind: sa.engine.Connection) -> None:
    bind.execute(
        JOBS.update().where(sa.cast(JOBS.c.status, sa.String).in_(FINAL)).values(calls_left=0)
    )
    rows = bind.execute(
        sa.select(JOBS.c.id, JOBS.c.request, JOBS.c.progress).where(
            sa.cast(JOBS.c.status, sa.String).not_in(FINAL)
        )
    ).all()
    for job_id, request, progress in rows:
        bind.execute(
            JOBS.update()
            .where(JOBS.c.id == job_id)
            .values(calls_left=calls_left(request or {}, progress or {}))
        )


def _backfill_counts(bind: sa.engine.Connection) -> None:
    bind.execute(
        sa.text(
            "INSERT INTO job_counts (batch_id, account, priority, state, code, jobs, calls) "
            f"SELECT COALESCE(batch_id, ''), account, priority, {state_sql('')}, "
            "COALESCE(error_code, ''), count(*), sum(calls_left) "
            "FROM provisioning_jobs GROUP BY 1, 2, 3, 4, 5"
        )
    )


def _jobs_in_order(bind: sa.engine.Connection) -> Iterator[Any]:
    """Every job with something recorded, in the order its last checkpoint was written."""
    query = (
        sa.select(
            JOBS.c.id,
            JOBS.c.operation,
            JOBS.c.domain,
            JOBS.c.account,
            JOBS.c.request,
            JOBS.c.progress,
            JOBS.c.updated_at,
            JOBS.c.created_at,
        )
        .order_by(JOBS.c.updated_at, JOBS.c.id)
        .execution_options(yield_per=1000)
    )
    yield from bind.execute(query)


def backfill_inventory(bind: sa.engine.Connection) -> None:
    """What the jobs did to Plausible, replayed: sites and their goals and links made or adopted,
    minus what later deletes removed."""
    meta = sa.MetaData()
    sites = sa.Table("inventory_sites", meta, autoload_with=bind)
    goals = sa.Table("inventory_goals", meta, autoload_with=bind)
    links = sa.Table("inventory_links", meta, autoload_with=bind)
    for job in list(_jobs_in_order(bind)):
        progress = job.progress or {}
        request = job.request or {}
        when = job.updated_at or datetime.now(UTC)
        if job.operation == "provision_site" and progress.get("site"):
            site = progress["site"]
            domain = site["domain"]
            origin = (
                "existed"
                if site.get("existed")
                else "adopted"
                if site.get("adopted")
                else "created"
            )
            where = (sites.c.account == job.account) & (sites.c.domain == domain)
            if bind.execute(sa.select(sites.c.domain).where(where)).first() is None:
                bind.execute(
                    sites.insert().values(
                        account=job.account,
                        domain=domain,
                        timezone=site["timezone"],
                        origin=origin,
                        job_id=job.id,
                        created_at=job.created_at,
                        confirmed_at=when,
                    )
                )
            else:
                bind.execute(sites.update().where(where).values(confirmed_at=when))
            for key, goal in (progress.get("goals") or {}).items():
                at = (goals.c.account == job.account) & (goals.c.domain == domain)
                bind.execute(goals.delete().where(at, goals.c.natural_key == key))
                bind.execute(
                    goals.insert().values(
                        account=job.account,
                        domain=domain,
                        natural_key=key,
                        goal_id=goal["id"],
                        goal_type=goal["goal_type"],
                        event_name=goal.get("event_name"),
                        page_path=goal.get("page_path"),
                        display_name=goal["display_name"],
                        job_id=job.id,
                        confirmed_at=when,
                    )
                )
            for name, url in (progress.get("shared_links") or {}).items():
                at = (links.c.account == job.account) & (links.c.domain == domain)
                bind.execute(links.delete().where(at, links.c.name == name))
                bind.execute(
                    links.insert().values(
                        account=job.account,
                        domain=domain,
                        name=name,
                        url=url,
                        job_id=job.id,
                        confirmed_at=when,
                    )
                )
        elif job.operation == "delete_site" and (
            progress.get("deleted") or progress.get("already_gone")
        ):
            for table in (links, goals, sites):
                bind.execute(
                    table.delete().where(
                        table.c.account == job.account, table.c.domain == job.domain
                    )
                )
        elif job.operation == "delete_goal" and progress.get("deleted"):
            goal_id = progress.get("goal_id") or request.get("goal_id")
            if goal_id is not None:
                bind.execute(
                    goals.delete().where(
                        goals.c.account == job.account,
                        goals.c.domain == job.domain,
                        goals.c.goal_id == goal_id,
                    )
                )


# -- triggers -----------------------------------------------------------------------------------


def state_sql(row: str) -> str:
    """A job's counted state: its status, with ``queued`` split into ``ready`` and
    ``dispatched``. ``row`` is ``NEW.``, ``OLD.``, ``n.`` or ``''``."""
    return (
        f"CASE WHEN {row}status = 'queued' AND {row}dispatched_at IS NULL THEN 'ready' "
        f"WHEN {row}status = 'queued' THEN 'dispatched' ELSE CAST({row}status AS VARCHAR(16)) END"
    )


def _key_values(row: str) -> str:
    return (
        f"COALESCE({row}batch_id, ''), {row}account, {row}priority, {state_sql(row)}, "
        f"COALESCE({row}error_code, '')"
    )


_COUNT_COLUMNS = "(batch_id, account, priority, state, code, jobs, calls)"
_ON_KEY = "ON CONFLICT (batch_id, account, priority, state, code) DO UPDATE SET "


def _sqlite_triggers() -> list[str]:
    upsert_new = (
        f"INSERT INTO job_counts {_COUNT_COLUMNS} VALUES ({_key_values('NEW.')}, 1, NEW.calls_left) "
        f"{_ON_KEY}jobs = jobs + 1, calls = calls + excluded.calls;"
    )
    old_key = " AND ".join(
        f"{column} = {value}"
        for column, value in zip(
            KEY,
            (
                "COALESCE(OLD.batch_id, '')",
                "OLD.account",
                "OLD.priority",
                state_sql("OLD."),
                "COALESCE(OLD.error_code, '')",
            ),
            strict=True,
        )
    )
    changed = " OR ".join(
        f"OLD.{c} IS NOT NEW.{c}"
        for c in ("batch_id", "account", "priority", "status", "error_code", "calls_left")
    )
    return [
        "CREATE TRIGGER provisioner_jobs_inserted AFTER INSERT ON provisioning_jobs BEGIN "
        "INSERT INTO batches (id, name, source, created_at) VALUES "
        "(COALESCE(NEW.batch_id, ''), COALESCE(NEW.batch_id, ''), 'unknown', NEW.created_at) "
        f"ON CONFLICT (id) DO NOTHING; {upsert_new} END",
        "CREATE TRIGGER provisioner_jobs_updated AFTER UPDATE ON provisioning_jobs "
        f"WHEN {changed} OR (OLD.dispatched_at IS NULL) IS NOT (NEW.dispatched_at IS NULL) BEGIN "
        f"UPDATE job_counts SET jobs = jobs - 1, calls = calls - OLD.calls_left WHERE {old_key}; "
        f"{upsert_new} END",
        "CREATE TRIGGER provisioner_jobs_finished AFTER UPDATE OF finished_at ON provisioning_jobs "
        "WHEN NEW.finished_at IS NOT NULL BEGIN UPDATE batches SET last_finished_at = "
        "NEW.finished_at WHERE id = COALESCE(NEW.batch_id, '') AND (last_finished_at IS NULL "
        "OR last_finished_at < NEW.finished_at); END",
    ]


def _postgres_triggers() -> list[str]:
    key = _key_values
    changed = (
        "(o.batch_id, o.account, o.priority, o.status, o.error_code, o.calls_left, "
        "o.dispatched_at IS NULL) IS DISTINCT FROM (n.batch_id, n.account, n.priority, n.status, "
        "n.error_code, n.calls_left, n.dispatched_at IS NULL)"
    )
    inserted = f"""
CREATE OR REPLACE FUNCTION provisioner_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO batches (id, name, source, created_at)
  SELECT COALESCE(batch_id, ''), COALESCE(batch_id, ''), 'unknown', min(created_at)
  FROM new_rows GROUP BY 1 ORDER BY 1
  ON CONFLICT (id) DO NOTHING;
  INSERT INTO job_counts AS c {_COUNT_COLUMNS}
  SELECT {key("")}, count(*), sum(calls_left) FROM new_rows
  GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
  {_ON_KEY}jobs = c.jobs + excluded.jobs, calls = c.calls + excluded.calls;
  RETURN NULL;
END $$"""
    updated = f"""
CREATE OR REPLACE FUNCTION provisioner_jobs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_counts AS c {_COUNT_COLUMNS}
  SELECT batch_id, account, priority, state, code, sum(jobs), sum(calls) FROM (
    SELECT {key("o.")}, -1 AS jobs, -o.calls_left AS calls
    FROM old_rows o JOIN new_rows n ON n.id = o.id WHERE {changed}
    UNION ALL
    SELECT {key("n.")}, 1, n.calls_left
    FROM old_rows o JOIN new_rows n ON n.id = o.id WHERE {changed}
  ) AS d (batch_id, account, priority, state, code, jobs, calls)
  GROUP BY 1, 2, 3, 4, 5 HAVING sum(jobs) <> 0 OR sum(calls) <> 0 ORDER BY 1, 2, 3, 4, 5
  {_ON_KEY}jobs = c.jobs + excluded.jobs, calls = c.calls + excluded.calls;
  UPDATE batches AS b SET last_finished_at = f.at
  FROM (
    SELECT COALESCE(n.batch_id, '') AS id, max(n.finished_at) AS at
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    WHERE n.finished_at IS NOT NULL AND n.finished_at IS DISTINCT FROM o.finished_at
    GROUP BY 1
  ) AS f
  WHERE b.id = f.id AND (b.last_finished_at IS NULL OR b.last_finished_at < f.at);
  RETURN NULL;
END $$"""
    return [
        inserted,
        updated,
        "CREATE TRIGGER provisioner_jobs_inserted AFTER INSERT ON provisioning_jobs "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION provisioner_jobs_inserted()",
        "CREATE TRIGGER provisioner_jobs_updated AFTER UPDATE ON provisioning_jobs "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION provisioner_jobs_updated()",
    ]


def create_triggers(bind: sa.engine.Connection) -> None:
    statements = _postgres_triggers() if bind.dialect.name == "postgresql" else _sqlite_triggers()
    for statement in statements:
        bind.exec_driver_sql(statement)


def drop_triggers(bind: sa.engine.Connection) -> None:
    for name in (
        "provisioner_jobs_inserted",
        "provisioner_jobs_updated",
        "provisioner_jobs_finished",
    ):
        bind.exec_driver_sql(
            f"DROP TRIGGER IF EXISTS {name} ON provisioning_jobs"
            if bind.dialect.name == "postgresql"
            else f"DROP TRIGGER IF EXISTS {name}"
        )
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql("DROP FUNCTION IF EXISTS provisioner_jobs_inserted()")
        bind.exec_driver_sql("DROP FUNCTION IF EXISTS provisioner_jobs_updated()")
