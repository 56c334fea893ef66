"""Retention, on SQLite and PostgreSQL: finished jobs past ``PROVISIONER_JOB_RETENTION`` go, with
their delivered webhooks, a chunk at a time; every inventory row, every batch's counts and
summary, and every webhook still to be delivered stay."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlmodel import Session, col, select

from testkit.clock import FakeClock
from testkit.databases import migrated_engine
from testkit.inventory import inventory, kept_counts
from worker.jobs.models import ProvisioningJob, WebhookDelivery
from worker.jobs.specs import GoalRecord, JobRequest, Progress, SiteRecord
from worker.jobs.states import DeliveryStatus, JobStatus, Operation
from worker.jobs.store import JobStore
from worker.settings import Settings
from worker.sweeper import prune_expired

RECEIVER = "https://hooks.example.com/provisioner"


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[JobStore]:
    engine = migrated_engine(database_url)
    yield JobStore(engine, clock=clock)
    engine.dispose()


def finish(store: JobStore, domain: str, *, fail: bool = False, callback: bool = False) -> str:
    """A job of batch ``old`` run to its end now: a site with a goal made (or a failure)."""
    request = JobRequest(
        operation=Operation.provision_site,
        domain=domain,
        callback_url=RECEIVER if callback else None,
    )
    job_id = store.enqueue(request, batch="old").job.id
    assert job_id in store.admit({job_id: {}})
    claim = store.claim(job_id, lease_seconds=30)
    assert claim is not None
    if fail:
        store.fail(
            claim, code="domain_taken", message="taken", http_status=400, progress=Progress()
        )
        return job_id
    goal = GoalRecord(id=7, goal_type="event", event_name="Signup", display_name="Signup")
    progress = Progress(
        site=SiteRecord(domain=domain, timezone="UTC"), goals={"event:Signup": goal}
    )
    store.checkpoint(claim, progress, lease_seconds=30)
    store.succeed(claim, progress)
    return job_id


def deliver(store: JobStore, job_id: str) -> None:
    with Session(store.engine) as session:
        for delivery in session.exec(
            select(WebhookDelivery).where(col(WebhookDelivery.job_id) == job_id)
        ):
            delivery.status = DeliveryStatus.delivered
            session.add(delivery)
        session.commit()


def kept(store: JobStore) -> set[str]:
    with Session(store.engine) as session:
        return set(session.exec(select(ProvisioningJob.id)).all())


def webhooks(store: JobStore) -> set[str]:
    with Session(store.engine) as session:
        return set(session.exec(select(WebhookDelivery.job_id)).all())


def test_old_finished_jobs_go_and_everything_derived_from_them_stays(
    store: JobStore, clock: FakeClock
) -> None:
    made = finish(store, "made.example.com")
    failed = finish(store, "taken.example.com", fail=True)
    delivered = finish(store, "told.example.com", callback=True)
    deliver(store, delivered)
    undelivered = finish(store, "waiting.example.com", callback=True)
    clock.advance(40 * 86400)
    young = finish(store, "young.example.com")
    running = store.enqueue(JobRequest(operation=Operation.delete_site, domain="x.example.com"))
    counts, sites = kept_counts(store.engine), inventory(store.engine)
    summary = store.batch_summary("old")
    assert summary.failures_by_code == {"domain_taken": 1}

    assert store.prune_finished(before=clock() - timedelta(days=30), limit=2) == 2
    assert store.prune_finished(before=clock() - timedelta(days=30)) == 1
    assert store.prune_finished(before=clock() - timedelta(days=30)) == 0

    assert kept(store) == {undelivered, young, running.job.id}
    assert {made, failed, delivered}.isdisjoint(kept(store))
    assert webhooks(store) == {undelivered}  # the delivered one went with its job
    assert kept_counts(store.engine) == counts
    assert inventory(store.engine) == sites
    after = store.batch_summary("old")
    assert (after.counts, after.total, after.failures_by_code) == (
        summary.counts,
        summary.total,
        summary.failures_by_code,
    )
    assert after.failures == []  # the failed job itself is gone
    assert store.get(undelivered) is not None


def test_the_sweeper_prunes_by_the_setting_and_0_keeps_everything(
    store: JobStore, clock: FakeClock
) -> None:
    job_id = finish(store, "made.example.com")
    clock.advance(3 * 3600)
    assert prune_expired(store, Settings(job_retention="0")) == 0  # type: ignore[arg-type]
    assert prune_expired(store, Settings(job_retention="4h")) == 0  # type: ignore[arg-type]
    assert job_id in kept(store)
    assert prune_expired(store, Settings(job_retention="2h")) == 1  # type: ignore[arg-type]
    assert job_id not in kept(store)
    assert store.batch_counts(["old"])["old"][JobStatus.succeeded.value] == 1


def test_a_retention_is_read_in_days_hours_minutes_seconds_or_iso() -> None:
    def parsed(value: str) -> timedelta:
        return Settings(job_retention=value).job_retention  # type: ignore[arg-type]

    assert parsed("30d") == timedelta(days=30)
    assert parsed("12h") == timedelta(hours=12)
    assert parsed("90m") == timedelta(minutes=90)
    assert parsed("45s") == parsed("45") == timedelta(seconds=45)
    assert parsed("P2D") == timedelta(days=2)
    with pytest.raises(ValueError, match="job_retention"):
        parsed("a month")
