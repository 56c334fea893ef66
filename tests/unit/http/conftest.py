"""The HTTP service's test fixtures: a migrated SQLite store and the app in front of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from provision.http.app import create_app
from testkit.databases import migrated_engine
from testkit.service_api import TOKEN
from worker.jobs.store import JobStore


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'web.db'}"))


@pytest.fixture
def client(store: JobStore) -> TestClient:
    return TestClient(create_app(store, token=SecretStr(TOKEN)))
