"""Completion webhooks, against a real local receiver: signed bodies, retries with backoff, no
redirects, leases a dead worker leaves behind, one transaction with the job's final status, URL
rules, and the secret nowhere but in the signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from producers.events import parse_event
from provisioner_types import Job, WebhookEvent
from testkit.clock import FakeClock
from testkit.databases import migrated_engine
from testkit.receiver import SECRET, Receiver, verify_signature
from testkit.sandbox_process import SandboxProcess
from testkit.waiting import wait_for
from worker import webhooks
from worker.accounts import load_accounts
from worker.egress import Targets, parse_hosts
from worker.errors import ConfigurationError, IdempotencyConflictError, InvalidRequestError
from worker.jobs import view
from worker.jobs.intake import fingerprint
from worker.jobs.specs import JobRequest, Progress
from worker.jobs.states import DeliveryStatus, JobStatus
from worker.jobs.store import JobStore
from worker.jobs.table import LeaseLostError
from worker.runtime import check_worker_settings, make_store
from worker.settings import Settings, get_settings

# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


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


# -- where the URL comes from, and its rules ---------------------------------------------------


def accounts_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(
        f'[accounts.agency-b]\napi_key_env = "KEY_B"\nwebhook_url = "{url}"\n', encoding="utf-8"
    )
    return path


def test_the_accounts_webhook_url_serves_jobs_whose_event_names_none(
    tmp_path: Path, receiver: Receiver
) -> None:
    url = f"sqlite:///{tmp_path / 'accounts.db'}"
    migrated_engine(url).dispose()
    settings = Settings(
        database_url=url,
        accounts_file=accounts_file(tmp_path, receiver.url + "&from=account"),
        webhook_allow_private=True,
    )
    store = make_store(settings)
    assert store.webhook_urls == {"agency-b": receiver.url + "&from=account"}
    by_account = finish(store, request_to(None, "a.example.com", account="agency-b"))
    own = finish(store, request_to(receiver.url, "b.example.com", account="agency-b"))
    default = finish(store, request_to(None, "c.example.com"))
    assert delivery_of(store, by_account).url.endswith("&from=account")
    assert delivery_of(store, own).url == receiver.url
    assert store.deliveries(default) == []
    store.engine.dispose()


def test_during_a_rotation_each_secret_signs_and_an_account_signs_with_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver, client: httpx.Client
) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[accounts.agency-b]\napi_key_env = "KEY_B"\nwebhook_secret_env = "HOOK_SECRET_B"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("HOOK_SECRET_B", " b-new , b-old ")
    url = f"sqlite:///{tmp_path / 'rotation.db'}"
    migrated_engine(url).dispose()
    settings = hook_settings(
        database_url=url, accounts_file=path, webhook_secret=SecretStr("new-secret, " + SECRET)
    )
    store = make_store(settings)
    default = finish(store, request_to(receiver.url, "a.example.com"))
    agency = finish(store, request_to(receiver.url, "b.example.com", account="agency-b"))
    report = webhooks.deliver_due(store, settings, client, accounts=load_accounts(settings))
    assert report.delivered == 2
    signed = {
        json.loads(got.body)["job"]["id"]: (got.headers["Provisioner-Signature"], got.body)
        for got in receiver.requests
    }
    header, body = signed[default]
    assert header.count("v1=") == 2
    # A receiver that knows only the old secret, or only the new one, accepts it.
    assert verify_signature(SECRET, header, body)
    assert verify_signature("new-secret", header, body)
    header, body = signed[agency]
    assert header.count("v1=") == 2
    assert verify_signature("b-new", header, body)
    assert verify_signature("b-old", header, body)
    assert not verify_signature(SECRET, header, body)
    assert not verify_signature("new-secret", header, body)
    store.engine.dispose()


def test_an_account_with_its_own_secret_needs_no_process_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEY_B", "key-b")
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[accounts.agency-b]\napi_key_env = "KEY_B"\nwebhook_secret_env = "HOOK_SECRET_B"\n'
        'webhook_url = "https://app.example.com/hooks"\n',
        encoding="utf-8",
    )
    settings = Settings(plausible_api_key=SecretStr("key"), accounts_file=path)
    with pytest.raises(ConfigurationError) as caught:
        check_worker_settings(settings)
    assert str(caught.value) == (
        "account 'agency-b' has a webhook_url but PROVISIONER_WEBHOOK_SECRET nor HOOK_SECRET_B "
        "is not set: workers cannot sign its webhooks"
    )
    monkeypatch.setenv("HOOK_SECRET_B", "b-secret")
    check_worker_settings(settings)
    path.write_text(
        '[accounts.agency-b]\napi_key_env = "KEY_B"\nwebhook_secret_env = "not a name"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match="webhook_secret_env must name an environment"):
        load_accounts(settings)


def test_a_worker_will_not_start_with_a_webhook_url_and_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEY_B", "key-b")
    path = accounts_file(tmp_path, "https://app.example.com/hooks")
    settings = Settings(plausible_api_key=SecretStr("key"), accounts_file=path)
    with pytest.raises(ConfigurationError) as caught:
        check_worker_settings(settings)
    message = str(caught.value)
    assert "\n" not in message
    assert "'agency-b'" in message
    assert "PROVISIONER_WEBHOOK_SECRET" in message
    check_worker_settings(settings.model_copy(update={"webhook_secret": SecretStr(SECRET)}))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://app.example.com/x", None),
        ("  http://127.0.0.1:8080/hooks?token=abc  ", None),
        ("ftp://app.example.com/x", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("app.example.com/x", "http:// or https://"),
        ("https:///x", "must name a host"),
        ("https://user:pw@app.example.com/x", "user name or password"),
        ("https://user@app.example.com/x", "user name or password"),
        ("https://app.example.com:99999/x", "not a valid URL"),
        ("https://app.example.com/a b", "spaces"),
        ("https://app.example.com/" + "a" * 2100, "longer than 2048"),
        ("", "non-empty string"),
        (42, "non-empty string"),
        (["https://app.example.com"], "non-empty string"),
    ],
)
def test_a_callback_url_is_validated_and_the_error_names_it(
    url: object, problem: str | None
) -> None:
    event = {"domain": "shop.example.com", "callback_url": url}
    if problem is None:
        assert parse_event(event, targets=LOCAL).request.callback_url == str(url).strip()
        return
    with pytest.raises(InvalidRequestError) as caught:
        parse_event(event, targets=LOCAL)
    assert caught.value.field == "callback_url"
    assert problem in caught.value.message
    assert caught.value.message.startswith("callback_url ")


def test_the_allow_list_is_enforced_for_events_accounts_and_sends(
    tmp_path: Path,
    store: JobStore,
    monkeypatch: pytest.MonkeyPatch,
    receiver: Receiver,
    client: httpx.Client,
) -> None:
    hosts = parse_hosts(" hooks.example.com, *.app.example ,")
    assert hosts == {"hooks.example.com", "*.app.example"}
    ok = ["https://hooks.example.com/x", "https://HOOKS.example.com./x", "https://a.b.app.example/"]
    for url in ok:
        parse_event(
            {"domain": "a.example.com", "callback_url": url},
            targets=Targets(hosts, allow_private=True),
        )
    for url in ["https://evil.example.com/x", "https://app.example/x", "https://xapp.example/"]:
        with pytest.raises(InvalidRequestError, match="is not allowed") as caught:
            parse_event(
                {"domain": "a.example.com", "callback_url": url},
                targets=Targets(hosts, allow_private=True),
            )
        assert caught.value.field == "callback_url"
    # Without callback_hosts, the process's PROVISIONER_WEBHOOK_ALLOWED_HOSTS applies.
    monkeypatch.setenv("PROVISIONER_WEBHOOK_ALLOWED_HOSTS", "hooks.example.com")
    get_settings.cache_clear()
    try:
        with pytest.raises(InvalidRequestError, match="PROVISIONER_WEBHOOK_ALLOWED_HOSTS"):
            parse_event({"domain": "a.example.com", "callback_url": "https://evil.example/x"})
        parse_event({"domain": "a.example.com", "callback_url": "https://hooks.example.com/"})
    finally:
        monkeypatch.delenv("PROVISIONER_WEBHOOK_ALLOWED_HOSTS")
        get_settings.cache_clear()
    # The accounts file.
    with pytest.raises(ConfigurationError, match=r"account 'agency-b': webhook_url host") as bad:
        make_store(
            Settings(
                accounts_file=accounts_file(tmp_path, "https://evil.example/x"),
                webhook_allowed_hosts="hooks.example.com",
            )
        )
    assert str(tmp_path) in str(bad.value)
    # And before every send: a URL stored before the list changed is failed, never sent.
    job_id = finish(store, request_to(receiver.url))
    settings = hook_settings(webhook_allowed_hosts="hooks.example.com")
    assert webhooks.deliver_due(store, settings, client).failed == 1
    refused = delivery_of(store, job_id)
    assert refused.status == "failed"
    assert refused.last_error.startswith("not sent: the URL host '127.0.0.1' is not allowed")
    assert receiver.requests == []


def test_a_request_without_callback_url_keeps_its_fingerprint() -> None:
    plain = request_to(None)
    canonical = json.dumps(
        {"operation": "provision_site", "domain": "shop.example.com", "timezone": None,
         "goals": [], "shared_links": [], "goal_id": None, "goal": None},
        sort_keys=True,
        separators=(",", ":"),
    )  # fmt: skip
    assert fingerprint(plain) == hashlib.sha256(canonical.encode()).hexdigest()
    with_url = request_to("https://app.example.com/hooks")
    assert fingerprint(with_url) != fingerprint(plain)


def test_the_same_key_with_another_callback_url_is_a_conflict(store: JobStore) -> None:
    store.enqueue(request_to("https://a.example.com/hooks"), key="evt_1")
    assert not store.enqueue(request_to("https://a.example.com/hooks"), key="evt_1").created
    with pytest.raises(IdempotencyConflictError):
        store.enqueue(request_to("https://b.example.com/hooks"), key="evt_1")
    stored = store.get_by_key("evt_1")
    assert stored is not None
    assert stored.request["callback_url"] == "https://a.example.com/hooks"
    plain = store.enqueue(request_to(None, "plain.example.com")).job
    assert "callback_url" not in plain.request


# -- the HTTP API and the sender thread --------------------------------------------------------


def test_the_api_shows_the_webhook_on_the_job(store: JobStore, receiver: Receiver) -> None:
    from fastapi.testclient import TestClient

    from provision.http.app import create_app

    job_id = finish(store, request_to(receiver.url))
    job = store.get(job_id)
    assert job is not None
    shown = view.job_view(job)
    assert shown.webhook is not None
    assert shown.webhook.status == "pending"
    assert shown.webhook.next_attempt_at is not None
    api = TestClient(create_app(store, token=SecretStr("t0ken-for-tests")))
    served = api.get(f"/jobs/{job_id}", headers={"Authorization": "Bearer t0ken-for-tests"})
    assert Job.model_validate_json(served.content) == shown
    assert served.json()["webhook"] == shown.webhook.model_dump(mode="json")
    assert "url" not in served.json()["webhook"]


def test_the_sender_delivers_until_the_thread_that_started_it_ends(
    tmp_path: Path, receiver: Receiver
) -> None:
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'sender.db'}"))
    settings = hook_settings(sweep_interval_seconds=0.05)
    stop = threading.Event()
    started: list[webhooks.Sender | None] = []

    def sweeper() -> None:
        started.append(webhooks.start_sender(store, settings))
        stop.wait(30)

    owner = threading.Thread(target=sweeper)
    owner.start()
    finish(store, request_to(receiver.url))
    wait_for(lambda: receiver.requests, timeout=10, describe="a delivery")
    stop.set()
    owner.join()
    [sender] = started
    assert sender is not None
    sender.join(timeout=10)
    assert not sender.is_alive()


# -- secrets -----------------------------------------------------------------------------------


def test_the_secret_is_in_no_log_line_row_or_view(
    store: JobStore, clock: FakeClock, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    settings = hook_settings()
    with caplog.at_level(logging.DEBUG), Receiver([500, 302]) as receiver:
        job_id = finish(store, request_to(receiver.url))
        for _ in range(3):
            webhooks.deliver_due(store, settings, client)
            clock.advance(60)
        refusing = Receiver()
        down = finish(store, request_to(refusing.url, "down.example.com"))
        webhooks.deliver_due(store, settings, client)
        refusing.stop()
    assert len(receiver.requests) == 3
    assert "delivered (attempt 3, HTTP 200)" in caplog.text
    with store.engine.connect() as connection:
        rows = [
            str(row)
            for table in ("provisioning_jobs", "webhook_deliveries")
            for row in connection.execute(text(f"SELECT * FROM {table}")).all()
        ]
    jobs = [store.get(job_id), store.get(down)]
    shown = json.dumps([view.job_view(job).model_dump(mode="json") for job in jobs if job])
    for place in (caplog.text, "\n".join(rows), shown, repr(settings), str(settings)):
        assert SECRET not in place


# -- embedded mode -----------------------------------------------------------------------------


def test_embedded_mode_sends_webhooks_from_its_sweeper_thread(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    from provision.wiring import runtime

    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    settings = hook_settings(
        database_url=url,
        plausible_api_key=SecretStr(sandbox.api_key),
        plausible_base_url=sandbox.base_url,
        embedded_workers=1,
        sweep_interval_seconds=0.1,
    )
    with Receiver([500]) as receiver, runtime(settings) as store:
        job_id = store.enqueue(request_to(receiver.url, "embedded.example.com")).job.id
        # The first attempt is answered 500; the retry is due 5 to 10 s later (base 10 s).
        wait_for(lambda: receiver.requests, timeout=30, describe="the first attempt")
        store.clock = lambda: datetime.now(UTC) + timedelta(seconds=30)  # skip the backoff
        wait_for(
            lambda: store.deliveries(job_id)[0].status == "delivered",
            timeout=30,
            describe=lambda: f"the delivery: {store.deliveries(job_id)}",
        )
    job = store.get(job_id)
    assert job is not None
    assert job.status is JobStatus.succeeded
    webhook = view.job_view(job).webhook
    assert webhook is not None
    assert webhook.attempts == 2
    assert len(receiver.requests) == 2
    store.engine.dispose()
