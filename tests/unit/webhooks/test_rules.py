"""Where a webhook's URL and secret come from and the rules they are held to: accounts, secret
rotation, the allow-list, fingerprints; the HTTP API's view, the sender thread, the secret
nowhere but in the signature, and embedded mode."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from producers.events import parse_event
from provisioner_types import Job
from testkit.clock import FakeClock
from testkit.databases import migrated_engine
from testkit.receiver import SECRET, Receiver, verify_signature
from testkit.sandbox_process import SandboxProcess
from testkit.waiting import wait_for
from testkit.webhooks import LOCAL, delivery_of, finish, hook_settings, request_to
from worker import webhooks
from worker.accounts import load_accounts
from worker.egress import Targets, parse_hosts
from worker.errors import ConfigurationError, IdempotencyConflictError, InvalidRequestError
from worker.jobs import view
from worker.jobs.intake import fingerprint
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.runtime import check_worker_settings, make_store
from worker.settings import Settings, get_settings

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
