"""The scheduler and sweeper loop keeps going through outages, saying in one line what is down."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from kombu.exceptions import OperationalError

from producers.events import parse_event
from testkit.databases import migrated_engine
from worker.dispatch import Lane
from worker.jobs.store import JobStore
from worker.runtime import make_scheduler
from worker.settings import Settings
from worker.sweeper import sweep_forever
from worker.wakeups import Wakeup


class DownBroker:
    def publish(self, job_ids: Sequence[str], *, first: bool = False, bulk: bool = False) -> None:
        raise OperationalError("[Errno 111] Connection refused")

    def queued_messages(self) -> dict[Lane, int]:
        raise OperationalError("[Errno 111] Connection refused")


def test_a_broker_outage_is_one_warning_line_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = JobStore(migrated_engine(url))
    store.enqueue(parse_event({"domain": "a.example.com"}).request)
    settings = Settings(
        database_url=url, broker_url="redis://127.0.0.1:1/0", schedule_interval_seconds=0.01
    )
    ticks = iter(range(3))

    def stopped() -> bool:
        return next(ticks, None) is None

    with caplog.at_level(logging.WARNING):
        sweep_forever(
            store, make_scheduler(settings, store, DownBroker()), settings, Wakeup(), stopped
        )
    lines = [r for r in caplog.records if r.name == "worker.sweeper"]
    assert lines, "the outage was not logged"
    assert all(r.exc_info is None for r in lines)
    assert "cannot reach the broker redis://127.0.0.1:1/0" in lines[0].getMessage()
    [job] = store.list_jobs()
    assert job.dispatched_at is None  # handed back: the next tick offers it again
