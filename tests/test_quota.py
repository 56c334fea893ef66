"""The quota gate: one 429 holds every worker's calls until the window reopens."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tests.databases import migrated_engine
from tests.fake_clock import START, FakeClock
from tests.sandbox_process import SandboxProcess
from tests.test_service import make_pipeline, provision
from worker.errors import RateLimitedError
from worker.models import JobStatus
from worker.quota import QuotaGate
from worker.store import JobStore


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return migrated_engine(f"sqlite:///{tmp_path / 'jobs.db'}")


def refused(until: datetime, limit: str = "burst") -> RateLimitedError:
    return RateLimitedError("Too many API requests", limit=limit, reset_at=until)


def gate(engine: Engine, clock: FakeClock) -> QuotaGate:
    return QuotaGate(engine, clock=clock, monotonic=clock.monotonic)


def test_a_429_seen_by_one_worker_closes_the_gate_for_all(engine: Engine) -> None:
    clock = FakeClock()
    first, second = gate(engine, clock), gate(engine, clock)
    assert second.closed_until() is None
    first.close(refused(START + timedelta(seconds=10)))
    clock.advance(1)  # the second worker re-reads an open gate once a second
    assert second.closed_until() == START + timedelta(seconds=10)
    with pytest.raises(RateLimitedError) as raised:
        second.check()
    assert (raised.value.code, raised.value.status) == ("quota_closed", None)
    clock.advance(9)
    assert second.closed_until() is None
    second.check()


def test_a_closure_is_never_shortened(engine: Engine) -> None:
    clock = FakeClock()
    hourly = START + timedelta(hours=1)
    gate(engine, clock).close(refused(hourly, "hourly"))
    gate(engine, clock).close(refused(START + timedelta(seconds=10)))
    assert gate(engine, clock).closed_until() == hourly


def test_parked_jobs_do_not_spend_quota_while_the_gate_is_shut(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'gated.db'}"))
    pipeline = dataclasses.replace(make_pipeline(sandbox, store), gate=QuotaGate(store.engine))
    sandbox.configure(burst_limit=2, burst_seconds=60)
    first, second = (store.enqueue(provision(f"s{n}.example.com")).job for n in range(2))

    assert pipeline.run(first.id) is JobStatus.waiting  # create, goal, then a 429
    refused_at = sandbox.state()["counters"]["total"]
    assert pipeline.run(second.id) is JobStatus.waiting

    assert sandbox.state()["counters"]["total"] == refused_at  # not one more request
    parked = store.get(second.id)
    assert parked is not None
    assert (parked.error_code, parked.attempts) == ("quota_closed", 0)
    assert parked.next_attempt_at is not None
    pipeline.client.close()
