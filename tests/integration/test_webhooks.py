"""Completion webhooks from real ``provision worker`` processes to a real local receiver.

The receiver (``testkit.receiver.Receiver``) is an HTTP server in this process. It checks
every signature with the algorithm docs/webhooks.md documents, answers 500 twice (the third attempt gets
the event), refuses connections while a worker that finished the job is SIGKILLed (a new worker
delivers the event from the outbox), and answers past the client's timeout (the event comes
again, with the same id and the same bytes). The secret appears in no worker's log.
"""

from __future__ import annotations

import json
from typing import Any

from producers.events import parse_event
from testkit.receiver import SECRET, Receiver, verify_signature
from testkit.waiting import wait_for
from testkit.workers import Stack, provision_event
from worker.egress import Targets
from worker.jobs.models import WebhookDelivery
from worker.jobs.states import JobStatus

#: Webhook settings scaled down: retries within a second, a short timeout.
HOOKS: dict[str, Any] = {
    "webhook_secret": SECRET,
    "webhook_allow_private": True,
    "webhook_timeout_seconds": 1,
    "webhook_backoff_base_seconds": 0.2,
    "webhook_backoff_max_seconds": 0.4,
}


def submit(stack: Stack, domain: str, url: str) -> str:
    event = {**provision_event(domain), "callback_url": url}
    return stack.submit(parse_event(event, targets=Targets(allow_private=True)).request).job.id


def delivery(stack: Stack, job_id: str) -> WebhookDelivery | None:
    found = stack.store.deliveries(job_id)
    assert len(found) <= 1, found
    return found[0] if found else None


def wait_delivered(stack: Stack, job_id: str, *, timeout: float = 45) -> WebhookDelivery:
    def delivered() -> WebhookDelivery | None:
        row = delivery(stack, job_id)
        return row if row is not None and row.status == "delivered" else None

    return wait_for(
        delivered,
        timeout=timeout,
        interval=0.1,
        describe=lambda: f"the webhook of job {job_id}: {delivery(stack, job_id)}\n{stack.logs()}",
    )


def assert_no_secret_logged(stack: Stack) -> None:
    for worker in stack.workers:
        assert SECRET not in worker.log_path.read_text(errors="replace"), worker.log_path


def test_a_receiver_answering_500_twice_gets_the_signed_event_on_the_third_try(
    stack: Stack,
) -> None:
    with Receiver([500, 500]) as receiver:
        stack.start_worker(**HOOKS)
        job_id = submit(stack, "hooked.example.com", receiver.url)
        row = wait_delivered(stack, job_id)
    assert (row.attempts, row.last_status, row.last_error) == (3, 200, None)
    assert len(receiver.requests) == 3
    for got in receiver.requests:
        header = got.headers["Provisioner-Signature"]
        assert verify_signature(SECRET, header, got.body), header
        assert not verify_signature("not-the-secret", header, got.body)
    assert {r.headers["Provisioner-Event-Id"] for r in receiver.requests} == {row.event_id}
    assert {r.body for r in receiver.requests} == {row.body.encode()}
    event = json.loads(receiver.requests[0].body)
    assert (event["id"], event["type"]) == (row.event_id, "job.succeeded")
    assert event["job"]["id"] == job_id
    assert event["job"]["status"] == "succeeded"
    assert [g["event_name"] or g["page_path"] for g in event["job"]["goals"]] == [
        "Signup",
        "/pricing",
    ]
    [job] = stack.jobs([job_id])
    assert job.webhook is not None
    assert (job.webhook.status, job.webhook.attempts, job.webhook.last_status) == (
        "delivered",
        3,
        200,
    )
    assert_no_secret_logged(stack)


def test_a_worker_killed_between_the_job_finishing_and_the_delivery_still_delivers(
    sqlite_stack: Stack,
) -> None:
    stack = sqlite_stack
    receiver = Receiver()  # not listening yet: every attempt is refused
    worker = stack.start_worker(**HOOKS)
    job_id = submit(stack, "killed.example.com", receiver.url)

    def finished_not_delivered() -> WebhookDelivery | None:
        # An attempt is counted when it is claimed, before its outcome is written: wait for both.
        row = delivery(stack, job_id)
        return row if row is not None and row.attempts >= 1 and row.last_error else None

    refused = wait_for(
        finished_not_delivered,
        timeout=45,
        describe=lambda: f"a refused attempt\n{stack.logs()}",
    )
    [job] = stack.jobs([job_id])
    assert job.status is JobStatus.succeeded
    assert (refused.status, refused.last_status) == ("pending", None)
    assert refused.last_error is not None
    assert "ConnectError" in refused.last_error
    worker.kill()  # SIGKILL: main process, pool children, sweeper and its sender

    with receiver.start():
        stack.start_worker(**HOOKS)
        row = wait_delivered(stack, job_id)
    assert row.attempts > refused.attempts
    assert [r.headers["Provisioner-Event-Id"] for r in receiver.requests] == [row.event_id]
    assert verify_signature(
        SECRET, receiver.requests[0].headers["Provisioner-Signature"], row.body.encode()
    )
    assert_no_secret_logged(stack)


def test_an_answer_past_the_timeout_brings_a_duplicate_with_the_same_event_id(
    sqlite_stack: Stack,
) -> None:
    stack = sqlite_stack
    with Receiver(["slow"]) as receiver:
        stack.start_worker(**HOOKS)
        job_id = submit(stack, "late.example.com", receiver.url)
        wait_for(
            lambda: len(receiver.requests) >= 2,
            timeout=45,
            describe=lambda: f"the event sent again\n{stack.logs()}",
        )
        receiver.release.set()
        row = wait_delivered(stack, job_id)
    first, second = receiver.requests[:2]
    assert first.headers["Provisioner-Event-Id"] == second.headers["Provisioner-Event-Id"]
    assert first.headers["Provisioner-Event-Id"] == row.event_id
    assert first.body == second.body == row.body.encode()
    for got in (first, second):
        assert verify_signature(SECRET, got.headers["Provisioner-Signature"], got.body)
    assert row.attempts == 2
    assert_no_secret_logged(stack)
