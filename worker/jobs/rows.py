"""A job's row read with the database's own driver (``sqlite3``, ``psycopg``), without
SQLAlchemy: ``provision status`` answers at once, and importing the ORM and the tables took
more than half of its time.

The statement is the one ``Queries.find`` runs (``JOB_BY_REF``), and the job read is shown by
the same ``worker.jobs.view``. Anything out of the ordinary (a URL form this reader does not
open, a database it cannot reach or read, another schema revision) answers None: the caller
then reads through the store, which says what is wrong.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.jobs.pgurl import psycopg_conninfo
from worker.jobs.revisions import head_revision
from worker.jobs.specs import Progress
from worker.jobs.states import JobStatus, Operation

#: How long a SQLite writer waits for another process's lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: How long connecting to PostgreSQL may take (a host that drops packets fails in seconds).
PG_CONNECT_TIMEOUT_SECONDS = 10

#: A job by its id or its idempotency key (``:ref``); the id wins if both match.
JOB_BY_REF = (
    "SELECT * FROM provisioning_jobs WHERE id = :ref OR idempotency_key = :ref "
    "ORDER BY CASE WHEN id = :ref THEN 0 ELSE 1 END LIMIT 1"
)
#: A job's latest completion webhook (``:job_id``): the last as ``ProvisioningJob.webhooks``
#: orders them.
LATEST_WEBHOOK = (
    "SELECT * FROM webhook_deliveries WHERE job_id = :job_id "
    "ORDER BY created_at DESC, event_id DESC LIMIT 1"
)
_REVISION = "SELECT version_num FROM alembic_version"


@dataclass(frozen=True)
class WebhookRecord:
    """What a view shows of a completion webhook (``worker.jobs.view.webhook_view``)."""

    event_id: str
    type: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime | None
    delivered_at: datetime | None


@dataclass(frozen=True)
class JobRecord:
    """What a view shows of a job (``worker.jobs.view.job_view``) and its account, read without
    the ORM: here by ``provision status``, and by ``Queries.poll`` for pollers."""

    id: str
    idempotency_key: str
    operation: Operation
    status: JobStatus
    domain: str
    batch_id: str | None
    progress: Progress
    attempts: int
    error_code: str | None
    error_message: str | None
    error_status: int | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    account: str
    webhook: WebhookRecord | None


def read_job(database_url: str, ref: str) -> JobRecord | None:
    """The job whose id or idempotency key is ``ref``, with its latest webhook; None when there
    is none, or when this reader cannot tell (see the module's docstring)."""
    opened = _open(database_url)
    if opened is None:
        return None
    connection, errors, pyformat = opened

    def rows(statement: str, **params: str) -> list[dict[str, Any]]:
        if pyformat:  # psycopg's placeholders
            statement = re.sub(r":(\w+)", r"%(\1)s", statement)
        cursor = connection.execute(statement, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    try:
        with contextlib.closing(connection):
            if [row["version_num"] for row in rows(_REVISION)] != [head_revision()]:
                return None
            found = rows(JOB_BY_REF, ref=ref)
            if not found:
                return None
            hooks = rows(LATEST_WEBHOOK, job_id=found[0]["id"])
    except errors:
        return None
    return _job(found[0], _webhook(hooks[0]) if hooks else None)


def _open(
    database_url: str,
) -> tuple[Any, type[Exception] | tuple[type[Exception], ...], bool] | None:
    """A connection to the database, the errors its driver raises, and whether it takes
    ``%(name)s`` placeholders; None for a URL this reader leaves to SQLAlchemy."""
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        # A query or an escape in the path, or a file that is not there: SQLAlchemy's to read
        # (and to explain).
        if not path or any(c in path for c in "?%") or not Path(path).is_file():
            return None
        try:
            connection: Any = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error:
            return None
        return connection, sqlite3.Error, False
    # A connect_timeout in the URL's query wins over ours.
    conninfo = psycopg_conninfo(database_url, connect_timeout=str(PG_CONNECT_TIMEOUT_SECONDS))
    if conninfo is None:
        return None
    import psycopg

    try:
        connection = psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error:
        return None
    return connection, psycopg.Error, True


def _job(row: Mapping[str, Any], webhook: WebhookRecord | None) -> JobRecord:
    # Enums are stored by name, as SQLAlchemy's Enum type writes them.
    return JobRecord(
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        operation=Operation[row["operation"]],
        status=JobStatus[row["status"]],
        domain=row["domain"],
        batch_id=row["batch_id"],
        progress=Progress.model_validate(_json(row["progress"]) or {}),
        attempts=row["attempts"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        error_status=row["error_status"],
        next_attempt_at=_when(row["next_attempt_at"]),
        created_at=_at(row["created_at"]),
        updated_at=_at(row["updated_at"]),
        finished_at=_when(row["finished_at"]),
        account=row["account"],
        webhook=webhook,
    )


def _webhook(row: Mapping[str, Any]) -> WebhookRecord:
    return WebhookRecord(
        event_id=row["event_id"],
        type=row["type"],
        status=row["status"],
        attempts=row["attempts"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        next_attempt_at=_when(row["next_attempt_at"]),
        created_at=_when(row["created_at"]),
        delivered_at=_when(row["delivered_at"]),
    )


def _json(value: Any) -> Any:
    """A JSON column: text on SQLite, already decoded by psycopg."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _when(value: Any) -> datetime | None:
    """A timestamp column that may be NULL."""
    return None if value is None else _at(value)


def _at(value: Any) -> datetime:
    """A timestamp column: ISO text on SQLite (naive, UTC, as SQLAlchemy writes it), a
    datetime from psycopg."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
