"""The webhook tests' fixtures: a store on a fake clock, a real local receiver and the sender's
HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.clock import FakeClock
from testkit.databases import migrated_engine
from testkit.receiver import Receiver
from testkit.webhooks import hook_settings
from worker import webhooks
from worker.jobs.store import JobStore


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'hooks.db'}"), clock=clock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with webhooks.make_client(hook_settings()) as made:
        yield made
