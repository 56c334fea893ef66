"""Outages end quickly: with the status database down, messages stay with the broker (none is
spent on a job nobody can claim); when the database or a restarted, emptied broker is back,
work resumes within seconds. Private PostgreSQL and Redis servers of the test's own are stopped
and restarted, never the machine's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from testkit.private_services import PrivatePostgres, PrivateRedis
from testkit.waiting import wait_for
from testkit.workers import Stack, assert_all_succeeded, assert_provisioned_once
from worker.jobs.states import JobStatus

RESUME_WITHIN = 10.0


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    try:
        server = PrivatePostgres().start()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"cannot start a private PostgreSQL: {exc}", pytrace=False)
    yield server
    server.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.close()


def finished_after(stack: Stack, ids: list[str], moment: float) -> float:
    """Seconds from ``moment`` until the first job finished after it."""
    finishes = sorted(
        j.finished_at.replace(tzinfo=UTC).timestamp()
        for j in stack.jobs(ids)
        if j.finished_at is not None and j.finished_at.replace(tzinfo=UTC).timestamp() > moment
    )
    assert finishes, "no job finished after the outage"
    return finishes[0] - moment


def test_a_database_outage_keeps_messages_with_the_broker_and_work_resumes_quickly(
    redis_url: str, private_pg: PrivatePostgres, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(redis_url, private_pg.url)
    stack.sandbox.configure(latency_ms=150)
    worker = stack.start_worker(concurrency=2)
    ids = stack.submit_sites(f"outage{n}.example.com" for n in range(24))
    wait_for(
        lambda: stack.status_counts(ids)[JobStatus.succeeded] >= 2,
        timeout=30,
        describe=lambda: f"the first jobs; {stack.status_counts(ids)}\n{stack.logs()}",
    )
    stack.engine.dispose()
    private_pg.stop()
    # The outage lasts until the workers have handed several messages back to the broker.
    wait_for(
        lambda: worker.log_path.read_text().count("back to the broker") >= 4,
        timeout=60,
        describe=lambda: f"messages handed back during the outage\n{stack.logs()}",
    )
    private_pg.start()
    back = datetime.now(UTC).timestamp()
    jobs = stack.wait_done(ids, timeout=90)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)
    assert finished_after(stack, ids, back) < RESUME_WITHIN
    # Handed back rather than lost: the sweeper did not have to publish them again.
    assert sum(j.dispatch_count for j in jobs) <= len(jobs) + 2


def test_a_restarted_empty_broker_is_refilled_and_work_resumes_quickly(
    private_redis: PrivateRedis, sqlite_url: str, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(private_redis.url, sqlite_url)
    stack.sandbox.configure(latency_ms=150)
    stack.start_worker(concurrency=2)
    ids = stack.submit_sites(f"restart{n}.example.com" for n in range(24))
    wait_for(
        lambda: stack.status_counts(ids)[JobStatus.succeeded] >= 2,
        timeout=30,
        describe=lambda: f"the first jobs; {stack.status_counts(ids)}\n{stack.logs()}",
    )
    private_redis.restart()  # no persistence: every message is gone
    back = datetime.now(UTC).timestamp()
    jobs = stack.wait_done(ids, timeout=90)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)
    assert finished_after(stack, ids, back) < RESUME_WITHIN
