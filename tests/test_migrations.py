"""Migrations: an empty database upgrades to head, the models agree with the migrations, and a
database made before migrations existed (or at an older revision) upgrades with its rows kept."""

from __future__ import annotations

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

from tests.producer_fixtures import pg_url  # noqa: F401  (fixture)
from tests.sandbox_process import REPO_ROOT
from worker.db import (
    BASELINE_REVISION,
    current_revision,
    head_revision,
    make_engine,
    require_current,
    upgrade,
)
from worker.errors import ConfigurationError


@pytest.fixture(params=["sqlite", "postgres"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'status.db'}"
    else:
        url = request.getfixturevalue("pg_url")
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


def test_a_missing_sqlite_file_is_reported_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    engine = make_engine(f"sqlite:///{path}")
    with pytest.raises(ConfigurationError, match="no status database at"):
        require_current(engine)
    assert not path.exists()


def test_db_upgrade_command_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"PATH": "/usr/bin:/bin", "PROVISIONER_DATABASE_URL": url}
    run = [sys.executable, "-m", "producers", "db"]
    behind = subprocess.run([*run, "check"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert behind.returncode == 2
    assert behind.stderr.strip().splitlines()[-1].startswith("Error: no status database at")
    done = subprocess.run([*run, "upgrade"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"revision {head_revision()}" in done.stdout
    check = subprocess.run([*run, "check"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
