"""Webhooks cannot be pointed inside the network (``worker.egress``): a URL whose host is or
resolves to a non-public address is refused when an event or the accounts file names it, and
again before every send, where the request goes to the very address checked (so a DNS answer
that changes in between, rebinding, is never followed). Resolution is patched at the system
resolver (``socket.getaddrinfo``) for the names ending in ``.test``; everything else resolves
for real."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from pydantic import SecretStr

from producers.events import parse_event
from testkit.databases import migrated_engine
from testkit.receiver import SECRET, Receiver, verify_signature
from worker import webhooks
from worker.egress import Refused, Targets, address_problem
from worker.errors import ConfigurationError, InvalidRequestError
from worker.jobs.specs import Progress
from worker.jobs.states import DeliveryStatus
from worker.jobs.store import JobStore
from worker.runtime import make_store
from worker.settings import Settings

PUBLIC = "93.184.216.34"
#: Forms the resolver reads as an address but no HTTP client can send to.
UNSENDABLE = {"http://0177.0.0.1/hook"}

#: Each URL names, or resolves to, an address no webhook may reach; and the words it is refused
#: with.
REFUSED = [
    ("http://127.0.0.1:6379/", "host 127.0.0.1 is a loopback address"),
    ("http://0.0.0.0:8080/", "host 0.0.0.0 is an unspecified address"),
    ("http://[::1]:8080/hook", "host ::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/hook", "host ::ffff:127.0.0.1 is a loopback address"),
    ("http://[::ffff:7f00:1]/hook", "is a loopback address"),
    ("http://2130706433/hook", "host '2130706433' resolves to a loopback address"),
    ("http://0177.0.0.1/hook", "host '0177.0.0.1' resolves to a loopback address"),
    ("http://0x7f.1/hook", "resolves to a loopback address"),
    ("http://localhost:8000/hook", "host 'localhost' resolves to a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "is a link-local address"),
    ("http://[fe80::1]/hook", "is a link-local address"),
    ("http://10.1.2.3/hook", "is a private address"),
    ("http://172.16.0.1/hook", "is a private address"),
    ("https://192.168.1.10/hook", "is a private address"),
    ("http://[fd00::1]/hook", "is a private address"),
    ("http://224.0.0.1/hook", "is a multicast address"),
    ("http://[ff02::1]/hook", "is a multicast address"),
    ("http://240.0.0.1/hook", "is a"),  # reserved (Python names it private too)
    ("http://100.64.0.1/hook", "is not a public address"),  # carrier-grade NAT
    ("http://[2002:7f00:1::]/hook", "is a loopback address"),  # 6to4 of 127.0.0.1
    ("http://[64:ff9b::a00:1]/hook", "is a private address"),  # NAT64 of 10.0.0.1
    ("http://internal.test/hook", "host 'internal.test' resolves to a private address"),
    ("http://mixed.test/hook", "host 'mixed.test' resolves to a loopback address"),
]

#: What the patched resolver answers for a name under ``.test``; lists are consumed in order.
Answers = dict[str, list[list[str]]]


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> Answers:
    """Names under ``.test`` resolve to what the test sets; each lookup takes the next answer
    (the last repeats). Every other name goes to the system resolver."""
    answers: Answers = {
        "internal.test": [["10.20.30.40"]],
        "mixed.test": [[PUBLIC, "127.0.0.1"]],
        "public.test": [[PUBLIC]],
    }
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.endswith(".test"):
            return real(host, port, *args, **kwargs)
        queue = answers[name]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (address, int(port or 0)),
            )
            for address in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(migrated_engine(f"sqlite:///{tmp_path / 'egress.db'}"))


def settings(**overrides: Any) -> Settings:
    return Settings(
        webhook_secret=SecretStr(SECRET),
        webhook_timeout_seconds=2,
        webhook_backoff_base_seconds=10,
        **overrides,
    )


def finish_with(store: JobStore, url: str) -> str:
    """A job finished with a webhook to ``url``, taken in with the address rule lifted (as an
    older version, or a changed DNS answer, would have let it in)."""
    request = parse_event(
        {"domain": "shop.example.com", "callback_url": url}, targets=Targets(allow_private=True)
    ).request
    job = store.enqueue(request).job
    claim = store.claim(job.id, lease_seconds=60)
    assert claim is not None
    store.succeed(claim, Progress())
    return job.id


@pytest.mark.parametrize(("url", "words"), REFUSED)
def test_an_event_naming_a_non_public_address_is_refused_in_words(
    names: Answers, url: str, words: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_event({"domain": "shop.example.com", "callback_url": url}, targets=Targets())
    assert caught.value.field == "callback_url"
    assert words in caught.value.message
    assert "PROVISIONER_WEBHOOK_ALLOW_PRIVATE" in caught.value.message
    # A hostname's addresses are never named: the error says nothing of the network's layout.
    if "resolves" in caught.value.message:
        assert "10.20.30.40" not in caught.value.message
    # The development switch lets it in, if it can be sent at all.
    event = {"domain": "shop.example.com", "callback_url": url}
    if url in UNSENDABLE:
        with pytest.raises(InvalidRequestError, match="is not a valid URL"):
            parse_event(event, targets=Targets(allow_private=True))
    else:
        assert parse_event(event, targets=Targets(allow_private=True)).request.callback_url == url


def test_a_public_address_is_allowed_and_an_unresolvable_host_waits_for_the_send(
    names: Answers,
) -> None:
    for url in (
        f"http://{PUBLIC}/hook",
        "https://[2606:4700:4700::1111]/hook",
        "https://public.test/hook",
        "https://does-not-exist.invalid/hook",  # checked again when sent
    ):
        event = {"domain": "shop.example.com", "callback_url": url}
        assert parse_event(event, targets=Targets()).request.callback_url == url
    destination = Targets().destination("https://public.test:8443/hook?x=1")
    assert destination.url == f"https://{PUBLIC}:8443/hook?x=1"
    assert (destination.host, destination.host_header) == ("public.test", "public.test:8443")
    assert destination.request_extensions() == {"sni_hostname": "public.test"}
    with pytest.raises(Refused) as unresolved:
        Targets().destination("https://does-not-exist.invalid/hook")
    assert not unresolved.value.final


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::", "an unspecified address"),
        ("169.254.0.1", "a link-local address"),
        ("239.1.1.1", "a multicast address"),
        ("192.0.2.1", "a private address"),  # documentation: private in Python's table
        ("198.18.0.1", "a private address"),  # benchmarking
        ("::ffff:10.0.0.1", "a private address"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "a loopback address"),  # Teredo: 127.0.0.1
        ("100.64.0.1", "not a public address"),
        (PUBLIC, None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_every_kind_of_non_public_address_is_named(address: str, words: str | None) -> None:
    assert address_problem(ipaddress.ip_address(address)) == words


def test_a_stored_url_to_a_non_public_address_is_failed_at_send_time_never_sent(
    store: JobStore, names: Answers
) -> None:
    with Receiver() as receiver, webhooks.make_client(settings()) as client:
        job_id = finish_with(store, receiver.url)
        report = webhooks.deliver_due(store, settings(), client)
        assert (report.failed, report.retried, report.delivered) == (1, 0, 0)
        (row,) = store.deliveries(job_id)
        assert row.status == DeliveryStatus.failed
        assert row.attempts == 1
        assert row.last_status is None
        assert row.last_error == (
            "not sent: the URL host 127.0.0.1 is a loopback address; webhooks go to public "
            "addresses only (PROVISIONER_WEBHOOK_ALLOW_PRIVATE)"
        )
        assert receiver.requests == []


def test_dns_rebinding_public_at_intake_and_loopback_at_send_is_refused(
    store: JobStore, names: Answers
) -> None:
    with Receiver(host="rebind.test") as receiver, webhooks.make_client(settings()) as client:
        names["rebind.test"] = [[PUBLIC], ["127.0.0.1"]]
        request = parse_event(
            {"domain": "shop.example.com", "callback_url": receiver.url}, targets=Targets()
        ).request
        assert request.callback_url == receiver.url  # public when taken in
        job = store.enqueue(request).job
        claim = store.claim(job.id, lease_seconds=60)
        assert claim is not None
        store.succeed(claim, Progress())
        assert webhooks.deliver_due(store, settings(), client).failed == 1
        (row,) = store.deliveries(job.id)
        assert row.last_error is not None
        assert "host 'rebind.test' resolves to a loopback address" in row.last_error
        assert "127.0.0.1" not in row.last_error
        assert receiver.requests == []


def test_the_request_goes_to_the_address_checked_under_its_own_host_name(
    store: JobStore, names: Answers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender resolves once and connects to that answer: were the name looked up again at
    connect time, its second answer (an address nothing listens on) would be used."""
    allowed = settings(webhook_allow_private=True)
    with Receiver(host="hooks.test") as receiver, webhooks.make_client(allowed) as client:
        names["hooks.test"] = [["127.0.0.1"], ["127.0.0.2"]]
        job_id = finish_with(store, receiver.url)
        assert webhooks.deliver_due(store, allowed, client).delivered == 1
        (got,) = receiver.requests
        assert got.headers["Host"] == f"hooks.test:{receiver.port}"
        assert got.path == "/hooks/provisioner?src=test"
        assert verify_signature(SECRET, got.headers["Provisioner-Signature"], got.body)
        assert store.deliveries(job_id)[0].status == DeliveryStatus.delivered


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


def tls_server(authority: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(name).configure_cert(context)
    return context


@pytest.fixture
def tls_client(authority: trustme.CA) -> Iterator[httpx.Client]:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    with webhooks.make_client(settings(), verify=context) as client:
        yield client


def test_over_tls_the_certificate_is_checked_for_the_host_name_not_the_address(
    store: JobStore, names: Answers, authority: trustme.CA, tls_client: httpx.Client
) -> None:
    allowed = settings(webhook_allow_private=True)
    names["secure.test"] = [["127.0.0.1"]]
    with Receiver(tls=tls_server(authority, "secure.test"), host="secure.test") as receiver:
        job_id = finish_with(store, receiver.url)
        assert webhooks.deliver_due(store, allowed, tls_client).delivered == 1
        assert receiver.requests[0].headers["Host"] == f"secure.test:{receiver.port}"
        assert store.deliveries(job_id)[0].status == DeliveryStatus.delivered
    # A certificate for another name is refused, though the address is the same.
    names["impostor.test"] = [["127.0.0.1"]]
    with Receiver(tls=tls_server(authority, "secure.test"), host="impostor.test") as receiver:
        job_id = finish_with(store, receiver.url)
        assert webhooks.deliver_due(store, allowed, tls_client).retried == 1
        (row,) = store.deliveries(job_id)
        assert row.last_error is not None
        assert "CERTIFICATE_VERIFY_FAILED" in row.last_error or "certificate" in row.last_error
        assert receiver.requests == []


def test_an_accounts_file_webhook_url_to_a_private_address_is_one_line(
    tmp_path: Path, names: Answers
) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[accounts.agency-b]\napi_key_env = "KEY_B"\nwebhook_url = "http://internal.test/in"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as caught:
        make_store(Settings(accounts_file=path))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: account 'agency-b': webhook_url host 'internal.test'")
    assert "resolves to a private address" in message
