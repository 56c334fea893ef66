"""End-to-end smoke runs: a few sites provisioned on each broker and each store."""

from __future__ import annotations

from collections.abc import Callable

from testkit.workers import Stack, assert_all_succeeded, assert_provisioned_once


def _provision_a_few(stack: Stack) -> None:
    stack.start_worker(concurrency=2)
    domains = [f"smoke{n}.example.com" for n in range(5)]
    ids = stack.submit_sites(domains)
    jobs = stack.wait_done(ids, timeout=30)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), jobs)
    assert all(job.attempts == 1 for job in jobs), [(j.domain, j.attempts) for j in jobs]
    assert not any(job.progress.site and job.progress.site.adopted for job in jobs)


def test_rabbitmq_broker_provisions_sites_end_to_end(
    amqp_url: str, sqlite_url: str, make_stack: Callable[..., Stack]
) -> None:
    _provision_a_few(make_stack(amqp_url, sqlite_url))


def test_postgres_store_provisions_sites_end_to_end(
    redis_url: str, postgres_url: str, make_stack: Callable[..., Stack]
) -> None:
    _provision_a_few(make_stack(redis_url, postgres_url))


def test_rabbitmq_broker_with_a_postgres_store_is_woken_through_the_status_database(
    amqp_url: str, postgres_url: str, make_stack: Callable[..., Stack]
) -> None:
    """No Redis: the scheduler's poll is an hour away, so once the first site is done and it
    sleeps, only the producer's NOTIFY can get the next ones provisioned."""
    stack = make_stack(amqp_url, postgres_url)
    stack.start_worker(concurrency=2, pool="threads", idle_poll_seconds=3600)
    first = stack.wait_done(stack.submit_sites(["first.example.com"]), timeout=30)
    assert_all_succeeded(first)
    ids = stack.submit_sites([f"notified{n}.example.com" for n in range(3)])
    jobs = stack.wait_done(ids, timeout=30)
    assert_all_succeeded(jobs)
    assert_provisioned_once(stack.sandbox.state(), first + jobs)
