"""Helpers of the webhook tests: settings that sign with the receiver's secret and allow its
loopback address, a request with a callback URL, and a job finished in a given state."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from producers.events import parse_event
from testkit.receiver import SECRET
from worker.egress import Targets
from worker.jobs.specs import JobRequest, Progress
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.settings import Settings

#: The rules events are held to here: the receiver is on 127.0.0.1.
LOCAL = Targets(allow_private=True)


def hook_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_secret": SecretStr(SECRET),
        # The receiver listens on 127.0.0.1 (tests/unit/test_egress.py holds the default).
        "webhook_allow_private": True,
        "webhook_timeout_seconds": 2,
        "webhook_backoff_base_seconds": 10,
        "webhook_backoff_max_seconds": 60,
        **overrides,
    }
    return Settings(**values)


def request_to(url: str | None, domain: str = "shop.example.com", **event: Any) -> JobRequest:
    data: dict[str, Any] = {"domain": domain, **event}
    if url is not None:
        data["callback_url"] = url
    return parse_event(data, targets=LOCAL).request


def finish(store: JobStore, request: JobRequest, status: JobStatus = JobStatus.succeeded) -> str:
    """Enqueue, claim and end a job in ``status``; returns its id."""
    job = store.enqueue(request).job
    if status is JobStatus.cancelled:
        assert store.cancel(job.id)
        return job.id
    claim = store.claim(job.id, lease_seconds=60)
    assert claim is not None
    if status is JobStatus.succeeded:
        store.succeed(claim, Progress())
    else:
        store.fail(
            claim, code="site_limit_reached", message="limit", http_status=402, progress=Progress()
        )
    return job.id


def delivery_of(store: JobStore, job_id: str) -> Any:
    found = store.deliveries(job_id)
    assert len(found) == 1, found
    return found[0]
