"""The sandbox tier's fixtures: a migrated store on each supported database in turn (SQLite, then
PostgreSQL) and a pipeline that runs jobs against the sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.databases import migrated_engine
from testkit.pipelines import client_of, make_pipeline
from testkit.sandbox_process import SandboxProcess
from worker.jobs.store import JobStore
from worker.service import Pipeline


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    engine = migrated_engine(database_url)
    yield JobStore(engine)
    engine.dispose()


@pytest.fixture
def pipeline(sandbox: SandboxProcess, store: JobStore) -> Iterator[Pipeline]:
    pipeline = make_pipeline(sandbox, store)
    yield pipeline
    client_of(pipeline).close()
