"""The status table in a Django database: its revision, and upgrading it (Alembic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.apps import AppConfig
from sqlalchemy.engine import make_url

from producers.django.conf import database_url, engine_for, options
from worker.jobs.db import current_revision, upgrade
from worker.jobs.revisions import head_revision


def revision(alias: str) -> str | None:
    """The status table's schema revision in ``DATABASES[alias]``; None: no status table. A
    SQLite file that does not exist is not created. Raises SQLAlchemyError if unreachable."""
    url = database_url(alias)
    parsed = make_url(url)
    path = parsed.database
    sqlite_file = parsed.get_backend_name() == "sqlite" and path and not path.startswith("file:")
    if sqlite_file and not Path(str(path)).exists():
        return None
    engine = engine_for(alias)
    try:
        with engine.connect() as connection:
            return current_revision(connection)
    finally:
        engine.dispose()


def migrate(alias: str) -> str:
    """Create or upgrade the status table in ``DATABASES[alias]`` to this version's schema (safe
    beside workers and other upgrades); returns the revision it is at."""
    engine = engine_for(alias)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return head_revision()


def upgrade_after_migrate(sender: AppConfig, *, using: str, verbosity: int = 1, **_: Any) -> None:
    """``post_migrate``: ``manage.py migrate`` (and the test runner's test databases) upgrade
    the status table too, unless ``PLAUSIBLE_PROVISIONER["MIGRATE"]`` is False."""
    settings = options()
    if not settings.migrate or using != settings.database:
        return
    if revision(using) == head_revision():
        return
    at = migrate(using)
    if verbosity >= 1:
        print(f"  Upgraded the provisioner's status table to revision {at}.")  # noqa: T201
