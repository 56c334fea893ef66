"""Completion webhooks delivered to a real local receiver: signed bodies, retries with backoff,
no redirects, leases a dead worker leaves behind, and one transaction with the job's final
status."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from provisioner_types import WebhookEvent
from testkit.clock import FakeClock
from testkit.receiver import SECRET, Receiver, verify_signature
from testkit.webhooks import delivery_of, finish, hook_settings, request_to
from worker import webhooks
from worker.jobs import view
from worker.jobs.specs import Progress
from worker.jobs.states import DeliveryStatus, JobStatus
from worker.jobs.store import JobStore
from worker.jobs.table import LeaseLostError

# -- signing and the body ----------------------------------------------------------------------


def test_the_receiver_verifies_the_signature_and_a_wrong_secret_fails(
    store: JobStore, receiver: Receiver, client: httpx.Client
) -> None:
    job_id = finish(store, request_to(receiver.url))
    report = webhooks.deliver_due(store, hook_settings(), client)
    assert report.delivered == 1
    [got] = receiver.requests
    header = got.headers["Provisioner-Signature"]
    assert verify_signature(SECRET, header, got.body)
    assert webhooks.verify(SECRET, header, got.body)
    assert not verify_signature("another-secret", header, got.body)
    assert not webhooks.verify("another-secret", header, got.body)
    assert not verify_signature(SECRET, header, got.body.replace(b"succeeded", b"failed"))
    # A replay long after: outside the tolerance on t.
    assert not webhooks.verify(SECRET, header, got.body, now=lambda: time.time() + 3600)

    event = json.loads(got.body)
    assert got.path == "/hooks/provisioner?src=test"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Provisioner-Event-Id"] == event["id"]
    assert got.headers["Provisioner-Delivery-Attempt"] == "1"
    assert got.headers["User-Agent"].startswith("plausible-provisioner-webhooks/")
    assert event["type"] == "job.succeeded"
    job = store.get(job_id)
    assert job is not None
    # The body's job is the public view of the job as it was when it finished.
    assert event["job"] == view.job_view(job).model_dump(mode="json", exclude={"webhook"})
    # A receiver can read the body with the model.
    parsed = WebhookEvent.model_validate_json(got.body)
    assert parsed.job == view.job_view(job, webhook=False)
    assert (parsed.id, parsed.type, parsed.created) == (
        event["id"],
        "job.succeeded",
        event["created"],
    )
    assert event["job"]["status"] == "succeeded"
    assert event["created"] == event["job"]["finished_at"]

    delivered = delivery_of(store, job_id)
    assert (delivered.status, delivered.attempts, delivered.last_status) == ("delivered", 1, 200)
    assert view.job_view(job).model_dump(mode="json")["webhook"] == {
        "event_id": event["id"],
        "type": "job.succeeded",
        "status": "delivered",
        "attempts": 1,
        "last_status": 200,
        "last_error": None,
        "next_attempt_at": None,
        "created_at": event["created"],
        "delivered_at": event["created"],  # the fake clock did not move
    }


def test_sign_and_verify_agree_and_the_header_is_stripe_style() -> None:
    body = b'{"id":"x"}'
    header = webhooks.sign("k", body, 1_700_000_000)
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert webhooks.verify("k", header, body, now=lambda: 1_700_000_100)
    assert not webhooks.verify("k", "v1=abc", body)
    assert not webhooks.verify("k", "t=x,v1=abc", body)


# -- retries -----------------------------------------------------------------------------------


def test_a_receiver_answering_500_twice_gets_the_event_on_the_third_try(
    store: JobStore, clock: FakeClock, client: httpx.Client
) -> None:
    settings = hook_settings()
    with Receiver([500, 500]) as receiver:
        job_id = finish(store, request_to(receiver.url))
        assert webhooks.deliver_due(store, settings, client).retried == 1
        first = delivery_of(store, job_id)
        assert (first.status, first.attempts, first.last_status) == ("pending", 1, 500)
        assert first.last_error == "HTTP 500"
        # Backoff: base 10 s, half of it jitter, so due 5 to 10 s later; not before.
        assert webhooks.deliver_due(store, settings, client).total == 0
        clock.advance(10)
        assert webhooks.deliver_due(store, settings, client).retried == 1
        second = delivery_of(store, job_id)
        assert (second.attempts, second.last_status) == (2, 500)
        wait = (second.next_attempt_at.replace(tzinfo=clock.now.tzinfo) - clock.now).total_seconds()
        assert 10 <= wait <= 20  # doubled
        clock.advance(20)
        assert webhooks.deliver_due(store, settings, client).delivered == 1
    done = delivery_of(store, job_id)
    assert (done.status, done.attempts, done.last_status, done.last_error) == (
        "delivered",
        3,
        200,
        None,
    )
    assert len(receiver.requests) == 3
    assert [r.headers["Provisioner-Delivery-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert len({r.headers["Provisioner-Event-Id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    job = store.get(job_id)
    assert job is not None
    delivery = view.job_view(job).webhook
    assert delivery is not None
    assert (delivery.status, delivery.attempts, delivery.last_status) == (
        "delivered",
        3,
        200,
    )


def test_a_delivery_is_failed_after_its_last_attempt_and_never_sent_again(
    store: JobStore, clock: FakeClock, client: httpx.Client
) -> None:
    settings = hook_settings(webhook_max_attempts=2)
    with Receiver([503, 503, 503]) as receiver:
        job_id = finish(store, request_to(receiver.url))
        webhooks.deliver_due(store, settings, client)
        clock.advance(60)
        assert webhooks.deliver_due(store, settings, client).failed == 1
        clock.advance(3600)
        assert webhooks.deliver_due(store, settings, client).total == 0
    assert len(receiver.requests) == 2
    failed = delivery_of(store, job_id)
    assert (failed.status, failed.attempts, failed.last_status) == ("failed", 2, 503)
    job = store.get(job_id)
    assert job is not None
    webhook = view.job_view(job).webhook
    assert webhook is not None
    assert webhook.status == "failed"


def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    store: JobStore, client: httpx.Client
) -> None:
    with Receiver([302]) as receiver:
        job_id = finish(store, request_to(receiver.url))
        assert webhooks.deliver_due(store, hook_settings(), client).retried == 1
    assert [r.path for r in receiver.requests] == ["/hooks/provisioner?src=test"]  # not /elsewhere
    pending = delivery_of(store, job_id)
    assert (pending.status, pending.last_status) == ("pending", 302)
    assert "redirect" in pending.last_error


def test_a_receiver_that_is_down_is_retried_with_a_one_line_error(
    store: JobStore, client: httpx.Client
) -> None:
    down = Receiver()  # never started: connections are refused
    job_id = finish(store, request_to(down.url))
    assert webhooks.deliver_due(store, hook_settings(), client).retried == 1
    down.stop()
    pending = delivery_of(store, job_id)
    assert (pending.status, pending.attempts, pending.last_status) == ("pending", 1, None)
    assert pending.last_error.startswith("ConnectError")
    assert "\n" not in pending.last_error
    assert "src=test" not in pending.last_error


def test_an_answer_past_the_timeout_is_sent_again_with_the_same_event_id_and_body(
    store: JobStore, clock: FakeClock
) -> None:
    settings = hook_settings(webhook_timeout_seconds=0.3)
    with Receiver(["slow"]) as receiver, webhooks.make_client(settings) as client:
        job_id = finish(store, request_to(receiver.url))
        assert webhooks.deliver_due(store, settings, client).retried == 1
        timed_out = delivery_of(store, job_id)
        assert (timed_out.last_status, timed_out.last_error) == (None, "no answer within 0.3s")
        receiver.release.set()  # the receiver did get (and will accept) the first one
        clock.advance(10)
        assert webhooks.deliver_due(store, settings, client).delivered == 1
    first, second = receiver.requests
    assert first.headers["Provisioner-Event-Id"] == second.headers["Provisioner-Event-Id"]
    assert first.body == second.body
    assert verify_signature(SECRET, first.headers["Provisioner-Signature"], first.body)
    assert verify_signature(SECRET, second.headers["Provisioner-Signature"], second.body)


def test_a_delivery_claimed_by_a_worker_that_died_is_sent_after_its_lease(
    store: JobStore, clock: FakeClock, receiver: Receiver, client: httpx.Client
) -> None:
    settings = hook_settings()
    job_id = finish(store, request_to(receiver.url))
    # A worker claims it and dies before recording anything.
    dead = store.claim_delivery(lease_seconds=webhooks.lease_seconds(settings), max_attempts=10)
    assert dead is not None
    assert webhooks.deliver_due(store, settings, client).total == 0  # still leased
    clock.advance(webhooks.lease_seconds(settings) + 1)
    assert webhooks.deliver_due(store, settings, client).delivered == 1
    assert delivery_of(store, job_id).attempts == 2
    [got] = receiver.requests
    assert got.headers["Provisioner-Delivery-Attempt"] == "2"
    # The dead worker's late report is discarded: its lease is gone.
    assert not store.finish_delivery(
        dead, status=DeliveryStatus.failed, last_status=None, last_error="x"
    )
    assert delivery_of(store, job_id).status == "delivered"


def test_a_worker_that_died_in_the_last_attempt_leaves_it_failed(
    store: JobStore, clock: FakeClock, receiver: Receiver, client: httpx.Client
) -> None:
    settings = hook_settings(webhook_max_attempts=1)
    job_id = finish(store, request_to(receiver.url))
    assert store.claim_delivery(lease_seconds=5, max_attempts=1) is not None
    clock.advance(6)
    assert webhooks.deliver_due(store, settings, client).total == 0
    failed = delivery_of(store, job_id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert "stopped" in failed.last_error
    assert receiver.requests == []


def test_nothing_is_sent_without_a_secret(
    store: JobStore, receiver: Receiver, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = finish(store, request_to(receiver.url))
    settings = hook_settings(webhook_secret=SecretStr(""))
    assert webhooks.deliver_due(store, settings, client).total == 0
    assert delivery_of(store, job_id).status == "pending"
    with caplog.at_level(logging.WARNING):
        assert webhooks.start_sender(store, settings) is None
    assert "1 webhook(s) wait: set PROVISIONER_WEBHOOK_SECRET" in caplog.text
    assert receiver.requests == []


# -- the outbox row and the job's final status -------------------------------------------------


def test_every_final_status_writes_its_event(store: JobStore, receiver: Receiver) -> None:
    succeeded = finish(store, request_to(receiver.url, "a.example.com"))
    failed = finish(store, request_to(receiver.url, "b.example.com"), JobStatus.failed)
    cancelled = finish(store, request_to(receiver.url, "c.example.com"), JobStatus.cancelled)
    none = finish(store, request_to(None, "d.example.com"))
    kinds = {job_id: [d.type for d in store.deliveries(job_id)] for job_id in (succeeded, failed)}
    assert kinds == {succeeded: ["job.succeeded"], failed: ["job.failed"]}
    assert [d.type for d in store.deliveries(cancelled)] == ["job.cancelled"]
    assert store.deliveries(none) == []
    job = store.get(none)
    assert job is not None
    assert view.job_view(job).webhook is None
    body = json.loads(store.deliveries(failed)[0].body)
    assert body["job"]["error"] == {
        "code": "site_limit_reached",
        "message": "limit",
        "http_status": 402,
    }
    # Waiting and queued again are not final: no event.
    parked = store.enqueue(request_to(receiver.url, "e.example.com")).job
    claim = store.claim(parked.id, lease_seconds=60)
    assert claim is not None
    store.park(
        claim,
        until=store.clock(),
        code="outage",
        message="down",
        http_status=503,
        progress=Progress(),
    )
    assert store.deliveries(parked.id) == []


def test_a_bulk_cancel_writes_an_event_per_job_with_a_url(
    store: JobStore, receiver: Receiver
) -> None:
    from worker.jobs.filters import JobFilter

    with_url = [
        store.enqueue(request_to(receiver.url, f"s{n}.example.com")).job.id for n in range(3)
    ]
    without = store.enqueue(request_to(None, "plain.example.com")).job.id
    cancelled = store.cancel_matching(JobFilter(status=JobStatus.queued))
    assert sorted(cancelled) == sorted([*with_url, without])
    assert [len(store.deliveries(job_id)) for job_id in with_url] == [1, 1, 1]
    assert store.deliveries(without) == []


def test_a_retried_job_that_finishes_again_has_a_second_event(
    store: JobStore, clock: FakeClock, receiver: Receiver
) -> None:
    job_id = finish(store, request_to(receiver.url), JobStatus.failed)
    clock.advance(1)
    assert store.retry(job_id)
    claim = store.claim(job_id, lease_seconds=60)
    assert claim is not None
    store.succeed(claim, Progress())
    first, second = store.deliveries(job_id)
    assert (first.type, second.type) == ("job.failed", "job.succeeded")
    assert first.event_id != second.event_id
    job = store.get(job_id)
    assert job is not None
    webhook = view.job_view(job).webhook
    assert webhook is not None
    assert webhook.event_id == second.event_id


def test_the_final_status_and_the_outbox_row_are_one_transaction(
    store: JobStore, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = store.enqueue(request_to(receiver.url)).job
    claim = store.claim(job.id, lease_seconds=60)
    assert claim is not None

    def broken(*args: Any) -> Any:
        raise RuntimeError("crash between the status and the outbox row")

    monkeypatch.setattr("worker.jobs.table.new_delivery", broken)
    with pytest.raises(RuntimeError):
        store.succeed(claim, Progress())
    after = store.get(job.id)
    assert after is not None
    assert after.status is JobStatus.running  # the status did not commit without its webhook
    monkeypatch.undo()
    store.succeed(claim, Progress())
    assert len(store.deliveries(job.id)) == 1


def test_a_lost_lease_writes_neither_status_nor_webhook(
    store: JobStore, clock: FakeClock, receiver: Receiver
) -> None:
    job = store.enqueue(request_to(receiver.url)).job
    stale = store.claim(job.id, lease_seconds=5)
    assert stale is not None
    clock.advance(6)
    fresh = store.claim(job.id, lease_seconds=60)
    assert fresh is not None
    with pytest.raises(LeaseLostError):
        store.succeed(stale, Progress())
    assert store.deliveries(job.id) == []
    store.succeed(fresh, Progress())
    assert len(store.deliveries(job.id)) == 1
